"""The bundle registry: immutable, content-addressed revisions as published."""
