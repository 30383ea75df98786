"""Where data comes from and goes: storage (local paths and object-store URIs),
importers of raw crawls, the demo crawl."""
