"""`importer watch`: a folder that scanners drop PDFs into, imported without a command.

Each pass walks the directories as `submit` does (`importer.submit.walk`), takes the files
that have settled (`settle`), and submits them into the watch's open batch
(`importer.submit.submit_files`); what it decided on each file, and the batch it is
filling, are kept in the database (`state`), so a restart repeats and loses nothing.
inotify or a timer says when to look again (`sources`); `command` runs the passes.
"""
