//! Azure Blob Storage access: credentials, listing, ranged reads.
