//! `audit index --check`: the trail read again and every record compared with its row.
