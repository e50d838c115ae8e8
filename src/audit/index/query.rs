//! `audit query --db`: rows found through the index, printed as `audit query` prints them.
