"""`python -m swrr.extract`: the same command as swrr-extract."""
from .cli import main

if __name__ == "__main__":
    main()
