"""The dashboard's pages, one module each; every module exports `routes`."""
