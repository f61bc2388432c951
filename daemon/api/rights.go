package api

// The role and right names WhoAmI reports that clients branch on (the
// studio offers create and assign-to by them). daemon/authz owns the full
// tables; a test there keeps these equal to its names.
const (
	// RoleOwner is the role that may create instances for others.
	RoleOwner = "owner"
	// RightWrite is the right to create instances.
	RightWrite = "computes/write"
)
