"""An IoT data contributor: trains on its own data, validates its peers, votes, keeps a chain replica."""
