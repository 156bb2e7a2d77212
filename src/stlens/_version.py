"""The stlens version and the version of its file formats (a module of its own, so that importing it loads nothing
else)."""

__version__ = "0.2.0"

#: the format of every JSON file stlens writes (its ``format_version`` field; docs/formats.md §0). A file without the
#: field was written before it existed and reads as version 1. Loaders read every version up to this one.
FORMAT_VERSION = 2
