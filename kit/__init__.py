"""The kit: the generic machinery that serves an OpenEnv environment and talks to it.

Nothing here names the environment: `rooms-new` copies this folder verbatim into every
environment it makes, and `rooms-new --update` brings it to a later version (see README.md).
"""
