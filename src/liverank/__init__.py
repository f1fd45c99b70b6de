"""liverank: live-streaming recommendation at the ranking stage."""

__version__ = "0.1.0"
