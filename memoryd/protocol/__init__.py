"""The wire contract of memoryd: typed resources and frames, codecs, error and close codes.

Pure: nothing here does I/O, awaits, or imports the server, storage or asyncio.
"""
