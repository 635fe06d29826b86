"""Running kubetune without a cluster: each step's pod as a local process (`pod`), in order (`runner`)."""
