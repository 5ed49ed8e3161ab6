"""A Flask app that starts and looks up trackers (see README.md)."""
