"""The target system: the PinSage recommender and the black-box service that hosts it."""
