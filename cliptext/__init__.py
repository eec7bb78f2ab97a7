"""Pieces every Cliptext component agrees on: settings, error codes, public ids."""
