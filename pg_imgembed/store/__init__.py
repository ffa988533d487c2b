"""Every query the package runs on the extension's tables, over the ``Database`` protocol: models,
lineage, embedded tables and their error records.
"""
