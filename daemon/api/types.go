package api

import "time"

// Version is the API version prefix of every path.
const Version = "v1"

// Info describes the daemon.
type Info struct {
	Version      string `json:"version"`
	Host         string `json:"host"`
	Accelerator  string `json:"accelerator"`
	AccelReason  string `json:"accelerator_reason,omitempty"`
	DataDir      string `json:"data_dir"`
	LibvirtURI   string `json:"libvirt_uri"`
	Caller       string `json:"caller"`
	CallerUID    int    `json:"caller_uid"`
	Instances    int    `json:"instances"`
	DefaultVNet  string `json:"default_vnet"`
	DefaultImage string `json:"default_image,omitempty"`
	// Cluster is set when the daemon is in a cluster.
	Cluster *ClusterMembership `json:"cluster,omitempty"`
}

// Size is one entry of the size catalogue.
type Size struct {
	Name      string `json:"name"`
	Family    string `json:"family"`
	VCPUs     int    `json:"vcpus"`
	MemoryMiB int    `json:"memory_mib"`
}

// Image is a base image in the catalogue.
type Image struct {
	Name        string    `json:"name"`
	Digest      string    `json:"sha256"`
	Format      string    `json:"format"`
	SourceFmt   string    `json:"source_format"`
	VirtualSize int64     `json:"virtual_size"`
	FileSize    int64     `json:"file_size"`
	ImportedBy  string    `json:"imported_by"`
	ImportedAt  time.Time `json:"imported_at"`
	UsedBy      []string  `json:"used_by,omitempty"`
	Apps        []App     `json:"apps"`
}

// App is an application served in guests of an image, reached with
// `labvm open`.
type App struct {
	Name string `json:"name"`
	Port int    `json:"port"`
	Path string `json:"path"`
}

// CreateInstanceRequest creates a compute instance.
type CreateInstanceRequest struct {
	Name  string `json:"name"`
	Size  string `json:"size"`
	Image string `json:"image"`
	// DiskSize is the OS disk's virtual size, e.g. "120G"; empty means the
	// daemon's default (120 GiB).
	DiskSize string `json:"disk_size,omitempty"`
	// SSHPublicKey is the content of an OpenSSH public key file. Without
	// it the guest gets no authorized key and SSH stays off.
	SSHPublicKey string `json:"ssh_public_key,omitempty"`
	VNet         string `json:"vnet,omitempty"`
	Subnet       string `json:"subnet,omitempty"`
	// AssignTo creates the instance on behalf of this user (owners only):
	// they, not the creator, get application access.
	AssignTo string `json:"assign_to,omitempty"`
	// SetupScript runs once, as root, at the first boot; StartupScript at
	// every boot. The instance stays SettingUp until they finish.
	SetupScript   string `json:"setup_script,omitempty"`
	StartupScript string `json:"startup_script,omitempty"`
	// ScriptTimeoutSeconds bounds each script; 0 means 15 minutes.
	ScriptTimeoutSeconds int `json:"script_timeout_seconds,omitempty"`
	// NoAutostart keeps the instance stopped after a host restart.
	NoAutostart bool `json:"no_autostart,omitempty"`
	// IdleShutdown stops the instance after this long unused: a duration
	// such as "30m", "2h" or "1d", or "off"; empty means the host's
	// default.
	IdleShutdown string `json:"idle_shutdown,omitempty"`
	// Datasets are declared datasets (`labvm dataset list`) the guest
	// sees read-only at /datasets/NAME; fixed at create.
	Datasets []string `json:"datasets,omitempty"`
}

// Instance is an instance as shown to users.
type Instance struct {
	ID          string        `json:"id"`
	Name        string        `json:"name"`
	State       InstanceState `json:"state"`
	StateReason string        `json:"state_reason,omitempty"`
	Size        Size          `json:"size"`
	Image       string        `json:"image"`
	ImageDigest string        `json:"image_sha256"`
	IP          string        `json:"ip"`
	MAC         string        `json:"mac"`
	VNet        string        `json:"vnet"`
	Subnet      string        `json:"subnet"`
	DiskVirtual int64         `json:"disk_virtual_bytes"`
	DiskUsed    int64         `json:"disk_used_bytes"`
	SSH         bool          `json:"ssh_enabled"`
	GuestUser   string        `json:"guest_user,omitempty"`
	Creator     string        `json:"creator"`
	AssignedTo  string        `json:"assigned_to,omitempty"`
	Owner       string        `json:"owner"`
	Domain      string        `json:"domain"`
	Accel       string        `json:"accelerator"`
	// JobsRunning and JobsQueued count the instance's jobs (labvm job);
	// State stays the plain instance state.
	JobsRunning int `json:"jobs_running"`
	JobsQueued  int `json:"jobs_queued"`
	// Apps are filled by GET /v1/instances/{name} only.
	Apps        []App     `json:"apps,omitempty"`
	SetupScript bool      `json:"setup_script,omitempty"`
	SetupExit   *int      `json:"setup_exit,omitempty"`
	Startup     bool      `json:"startup_script,omitempty"`
	Autostart   bool      `json:"autostart"`
	Host        string    `json:"host"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`

	// SSHHostKeys are the guest's SSH host public keys, authorized_keys
	// lines ("ssh-ed25519 AAAA…"), made by labvmd at create and handed to
	// the guest in its seed; ssh pins them. Empty for instances created
	// before labvmd made host keys.
	SSHHostKeys []string `json:"ssh_host_keys,omitempty"`

	// Provisioning is cloud-init's outcome on the latest boot; absent for
	// an image without cloud-init.
	Provisioning *Provisioning `json:"provisioning,omitempty"`

	// IdleShutdown is the idle shutdown and the idle clock.
	IdleShutdown IdleShutdown `json:"idle_shutdown"`
	// Schedules are filled by GET /v1/instances/{name} only.
	Schedules []Schedule `json:"schedules,omitempty"`
	// Datasets are the datasets the guest sees read-only at
	// /datasets/NAME.
	Datasets []string `json:"datasets,omitempty"`
}

// InstanceSummary is an instance as `GET /v1/instances?view=summary`
// lists it: what `labvm list` shows and no more, so a table of 10,000
// instances is under a third of the full view's bytes and cheap to build.
type InstanceSummary struct {
	ID    string        `json:"id"`
	Name  string        `json:"name"`
	State InstanceState `json:"state"`
	// Size is the size's name (the full view has the whole size).
	Size  string `json:"size"`
	Image string `json:"image"`
	IP    string `json:"ip"`
	Owner string `json:"owner"`
	// JobsRunning and JobsQueued are as in Instance.
	JobsRunning int       `json:"jobs_running"`
	JobsQueued  int       `json:"jobs_queued"`
	CreatedAt   time.Time `json:"created_at"`
}

// Views of GET /v1/instances (`?view=`): the full instance (the default)
// or the summary.
const (
	ViewFull    = "full"
	ViewSummary = "summary"
)

// ExecRequest runs a command in the guest through the QEMU guest agent.
type ExecRequest struct {
	Command []string `json:"command"`
	// Stdin is passed to the command.
	Stdin []byte `json:"stdin,omitempty"`
	// TimeoutSeconds bounds the run; 0 means the daemon's default.
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
}

// ExecResult is what the command did.
type ExecResult struct {
	ExitCode  int    `json:"exit_code"`
	Signal    int    `json:"signal,omitempty"`
	Stdout    []byte `json:"stdout"`
	Stderr    []byte `json:"stderr"`
	Truncated bool   `json:"truncated,omitempty"`
}

// AuditEntry is one call recorded in the audit log.
type AuditEntry struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Caller    string    `json:"caller"`
	UID       int       `json:"uid"`
	Action    string    `json:"action"`
	Target    string    `json:"target,omitempty"`
	Outcome   string    `json:"outcome"` // succeeded, failed, denied, or skipped (a policy chose not to act)
	Code      string    `json:"code,omitempty"`
	Message   string    `json:"message,omitempty"`
	Operation string    `json:"operation,omitempty"`
}

// WhoAmI is the caller as the daemon sees them.
type WhoAmI struct {
	User   string   `json:"user"`
	UID    int      `json:"uid"`
	Groups []string `json:"groups"`
	Role   string   `json:"role"`
	Rights []string `json:"rights"`
	Note   string   `json:"note,omitempty"`
}

// RoleAssignment gives a role to a user, or to a group written "@group".
type RoleAssignment struct {
	Principal  string    `json:"principal"`
	Role       string    `json:"role"`
	AssignedBy string    `json:"assigned_by,omitempty"`
	AssignedAt time.Time `json:"assigned_at,omitempty"`
}

// Quota shows core limits and use.
type Quota struct {
	Total    QuotaLine   `json:"total"`
	Families []QuotaLine `json:"families"`
}

// QuotaLine is used/limit for one family (or the total); Limit 0 means
// unlimited.
type QuotaLine struct {
	Family string `json:"family,omitempty"`
	Used   int    `json:"used"`
	Limit  int    `json:"limit"`
}

// SetQuotaRequest sets one limit: a family's, or the total when Family
// is empty. Limit 0 removes it.
type SetQuotaRequest struct {
	Family string `json:"family,omitempty"`
	Limit  int    `json:"limit"`
}

// UpdateInstanceRequest changes an instance. Nothing about an instance's
// shape can change; the type exists so such attempts get a clear answer.
type UpdateInstanceRequest struct {
	Size string `json:"size,omitempty"`
}

// VNet is an isolated network of instances.
type VNet struct {
	Name   string `json:"name"`
	Bridge string `json:"bridge"`
	CIDR   string `json:"cidr"`
	Egress string `json:"egress"` // nat or none
	// PeerTraffic is allow or deny: whether the VNet's guests reach each
	// other directly.
	PeerTraffic string    `json:"peer_traffic"`
	Subnets     []Subnet  `json:"subnets"`
	Addresses   []Address `json:"addresses_in_use"`
	CreatedBy   string    `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
}

// Subnet is a CIDR of a VNet with its gateway on the host.
type Subnet struct {
	Name    string `json:"name"`
	CIDR    string `json:"cidr"`
	Gateway string `json:"gateway"`
}

// Address is an address held by an instance.
type Address struct {
	IP       string        `json:"ip"`
	Subnet   string        `json:"subnet"`
	Instance string        `json:"instance"`
	State    InstanceState `json:"state"`
}

// CreateVNetRequest creates a VNet.
type CreateVNetRequest struct {
	Name   string `json:"name"`
	CIDR   string `json:"cidr"`
	Egress string `json:"egress,omitempty"`
	// PeerTraffic is allow or deny (the default): whether guests of the
	// VNet may reach each other.
	PeerTraffic string `json:"peer_traffic,omitempty"`
}

// CreateSubnetRequest adds a subnet to a VNet.
type CreateSubnetRequest struct {
	Name string `json:"name"`
	CIDR string `json:"cidr"`
}

// Logs is one of an instance's logs.
type Logs struct {
	Kind      string `json:"kind"` // console, setup or startup
	Content   string `json:"content"`
	Truncated bool   `json:"truncated,omitempty"`
}
