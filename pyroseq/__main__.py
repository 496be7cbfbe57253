"""``python -m pyroseq``: the ``pyroseq`` command without an installed console script."""

from pyroseq.cli import main

if __name__ == "__main__":
    main()
