"""Stage entry points: ``python -m s3tok.bin.<stage>``, each with ``get_parser()`` and ``main(argv=None)``."""
