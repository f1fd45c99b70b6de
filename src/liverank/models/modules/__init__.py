"""FeatureModules, one file per mechanism; each registers itself by name (``models/registry.py``).

Every non-private file of this package is imported when a module is first looked up by name.
"""
