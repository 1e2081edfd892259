"""Where the bytes live: storage backends (local, S3), encryption, the key layout and the repository."""
