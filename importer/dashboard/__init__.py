"""`importer dashboard`: a read-only web UI of the batches, failures, gearmand and search.

Pages are rendered on the server (Jinja2, every value escaped); htmx, served from this
package's static files, replaces the live parts every two seconds. Nothing here writes to
the database: the dashboard's connections are opened read-only (`readonly`).
"""
