"""The catalog tree: what ``publish`` writes (``store``) and what ``serve`` reads (``index``)."""
