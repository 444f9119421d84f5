"""Workflows as library operations: typed inputs, typed results, no printing.

Each module is one workflow, the same from Python as from the ``cas`` command line, which only
parses arguments, calls one operation and renders its result.
"""
