"""Collections as clients see them: listing, details, deletion, and the model that embeds them."""
