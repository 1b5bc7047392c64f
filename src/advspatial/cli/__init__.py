"""The ``advspatial`` command line."""
