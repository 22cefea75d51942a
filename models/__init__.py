"""Data package: the third-party model manifest and the bundles maskgate ships."""
