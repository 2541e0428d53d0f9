"""The feature discovery catalog: `/catalog` pages and the `/api/catalog` JSON API."""
