package store

// DeletionKind is the kind of a deletion request (DeleteChunks, ...,
// DeleteAdminSet): what it targets.
type DeletionKind = string

// governed reports whether requests of kind k govern the vault itself (the
// admin set, retention policies, standing expiry): they take the admin
// set's governance quorum and delay rather than the deletion ones. The
// migrations' triggers test the same list: kind IN ('admin_set','policy',
// 'expiry_authorisation').
func governed(k DeletionKind) bool {
	return k == "admin_set" || k == "policy" || k == "expiry_authorisation"
}
