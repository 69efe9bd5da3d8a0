"""`python -m swrr.predict`: the same command as swrr-predict."""
from swrr.entry import predict as main  # passive OpenMP waiting first, then .cli

if __name__ == "__main__":
    main()
