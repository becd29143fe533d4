"""Pydantic models: every operation's input and output, shared by MCP tools, facade and CLI.

One module per toolset; `common` holds the pieces they share.
"""
