"""`python -m swrr.train`: the same command as swrr-train."""
from .cli import main

if __name__ == "__main__":
    main()
