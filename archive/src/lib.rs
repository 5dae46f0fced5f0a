//! The archive: turns sealed, aged commitlog segments into Parquet on object storage, with a manifest
//! that makes each file visible atomically, and reads archived offsets back. Not built yet.
