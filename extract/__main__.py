"""`python -m swrr.extract`: the same command as swrr-extract."""
from swrr.entry import extract as main  # passive OpenMP waiting first, then .cli

if __name__ == "__main__":
    main()
