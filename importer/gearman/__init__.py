"""Everything that speaks to or runs gearmand on our side.

`address` (where a gearmand is), `tlscontext` (our TLS client settings), `connection` (one
socket to one gearmand), `admin` (the text protocol), `client` (GearmanIO: submits and
status), `send` (documents from the database onto gearmand), `server` (a gearmand child
process), `stunnel` (mutual TLS in front of it) and `foreground` (`importer gearmand`).
"""
