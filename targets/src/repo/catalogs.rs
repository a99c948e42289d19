//! File catalogs (`catalogs/<snapshot id>`): the list of paths of a snapshot's file systems,
//! written after its snapshot and removed with it. The encoding is `chunker::format`'s; here
//! they are stored, sealed in an encrypted repository, and found again.

use chunker::format::ObjectId;

use super::Repository;
use crate::layout::{catalog_key, object_ids, CATALOGS_DIR};
use crate::{crypt, Error, Result};

impl Repository {
    /// Stores `plain`, the encoded file catalog of snapshot `id` (replacing any).
    pub fn put_catalog(&self, id: &ObjectId, plain: &[u8]) -> Result<()> {
        let bytes = crypt::catalog_out(self.crypto(), plain);
        self.backend().put(&catalog_key(id), &bytes)
    }

    /// The encoded file catalog of snapshot `id`, or `None` when it has none.
    pub fn load_catalog(&self, id: &ObjectId) -> Result<Option<Vec<u8>>> {
        match self.backend().get(&catalog_key(id)) {
            Ok(b) => crypt::catalog_in(self.crypto(), id, b).map(Some),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
    /// Ids of the snapshots that have a file catalog (some may be forgotten meanwhile).
    pub fn catalog_ids(&self) -> Result<Vec<ObjectId>> {
        object_ids(&**self.backend(), CATALOGS_DIR)
    }
}
