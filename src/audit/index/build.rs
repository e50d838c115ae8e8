//! Building the index: the trail read in order from where the index stopped, the chain checked
//! record by record, rows written in batches of one transaction each.
