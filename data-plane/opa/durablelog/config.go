package durablelog

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/util"
)

// PluginName is the key under `plugins` in OPA's configuration, and the
// name `decision_logs.plugin` gives to route OPA's decision events here.
const PluginName = "nexus_durable_log"

// Defaults, beside the configuration that reads them.
const (
	// A segment is sealed (and so becomes shippable) at this size...
	defaultMaxSegmentBytes = 4 << 20
	// ...or once its first record is this old, so a quiet enforcer still
	// ships within about a second.
	defaultMaxSegmentAge = 500 * time.Millisecond
	// One upload's inflated JSON array; the audit intake takes 32 MiB
	// compressed and 512 MiB inflated, so a chunk this size is always
	// inside both limits.
	defaultUploadLimitBytes = 4 << 20
	// One upload's event count; the intake takes at most 100,000.
	defaultUploadLimitEvents = 10_000
	// Retry backoff after a failed upload: doubled each time up to the
	// maximum; a 429's Retry-After overrides it.
	defaultMinRetryDelay = 100 * time.Millisecond
	defaultMaxRetryDelay = 10 * time.Second
	// The largest record the journal writes (and the largest a scan
	// believes): the intake refuses an event over 1 MiB anyway.
	maxRecordBytes = 8 << 20
)

// Config is the plugin's configuration block.
type Config struct {
	// Dir holds the segments (created 0700); it must survive a restart.
	Dir string `json:"dir"`
	// Service names the entry under `services` to ship to (POST <url>/logs,
	// gzip JSON array: the wire format of OPA's own uploader).
	Service string `json:"service"`
	// WaitFor: how far an event goes before Log (and so the ext_authz
	// answer) returns: "fsync" (the default: on disk, survives a host
	// crash), "write" (in the page cache: survives a killed OPA, not a host
	// crash before the next fsync), "none" (answered at once). A decision
	// result's decision_log.wait_for overrides it for that decision.
	WaitFor string `json:"wait_for"`
	// WaitForCommit is the older spelling: true is "fsync", false "none".
	WaitForCommit *bool `json:"wait_for_commit"`
	// MaxSegmentBytes and MaxSegmentAgeMillis seal the active segment.
	MaxSegmentBytes     int64 `json:"max_segment_bytes"`
	MaxSegmentAgeMillis int64 `json:"max_segment_age_ms"`
	// UploadLimitBytes and UploadLimitEvents bound one upload (inflated).
	UploadLimitBytes  int `json:"upload_limit_bytes"`
	UploadLimitEvents int `json:"upload_limit_events"`
	// MinRetryDelayMillis and MaxRetryDelayMillis bound the backoff.
	MinRetryDelayMillis int64 `json:"min_retry_delay_ms"`
	MaxRetryDelayMillis int64 `json:"max_retry_delay_ms"`

	waitFor       waitLevel
	maxSegmentAge time.Duration
	minRetryDelay time.Duration
	maxRetryDelay time.Duration
}

// Factory validates configuration and creates the plugin.
type Factory struct{}

// Validate parses the plugin's configuration and fills in defaults.
func (Factory) Validate(m *plugins.Manager, raw []byte) (any, error) {
	cfg := Config{}
	if err := util.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", PluginName, err)
	}
	var services []string
	if m != nil {
		services = m.Services()
	}
	if err := cfg.validate(services); err != nil {
		return nil, fmt.Errorf("%s: %w", PluginName, err)
	}
	return &cfg, nil
}

func (c *Config) validate(services []string) error {
	if c.Dir == "" {
		return fmt.Errorf("dir must name the segment directory")
	}
	if !filepath.IsAbs(c.Dir) {
		return fmt.Errorf("dir %q must be an absolute path", c.Dir)
	}
	if c.Service == "" {
		return fmt.Errorf("service must name the audit intake's entry under services")
	}
	found := false
	for _, s := range services {
		found = found || s == c.Service
	}
	if services != nil && !found {
		return fmt.Errorf("service %q is not under services", c.Service)
	}
	switch level, known := waitLevels[c.WaitFor]; {
	case c.WaitFor != "" && !known:
		return fmt.Errorf("wait_for %q must be fsync, write or none", c.WaitFor)
	case c.WaitFor != "" && c.WaitForCommit != nil:
		return fmt.Errorf("set wait_for or wait_for_commit, not both")
	case c.WaitFor != "":
		c.waitFor = level
	case c.WaitForCommit != nil && !*c.WaitForCommit:
		c.waitFor = waitNone
	default:
		c.waitFor = waitFsync
	}
	positive := func(name string, v *int64, def int64) error {
		if *v == 0 {
			*v = def
		}
		if *v < 0 {
			return fmt.Errorf("%s must be positive", name)
		}
		return nil
	}
	if err := positive("max_segment_bytes", &c.MaxSegmentBytes, defaultMaxSegmentBytes); err != nil {
		return err
	}
	if err := positive("max_segment_age_ms", &c.MaxSegmentAgeMillis, defaultMaxSegmentAge.Milliseconds()); err != nil {
		return err
	}
	if err := positive("min_retry_delay_ms", &c.MinRetryDelayMillis, defaultMinRetryDelay.Milliseconds()); err != nil {
		return err
	}
	if err := positive("max_retry_delay_ms", &c.MaxRetryDelayMillis, defaultMaxRetryDelay.Milliseconds()); err != nil {
		return err
	}
	if c.UploadLimitBytes == 0 {
		c.UploadLimitBytes = defaultUploadLimitBytes
	}
	if c.UploadLimitEvents == 0 {
		c.UploadLimitEvents = defaultUploadLimitEvents
	}
	if c.UploadLimitBytes < 0 || c.UploadLimitEvents < 0 {
		return fmt.Errorf("upload_limit_bytes and upload_limit_events must be positive")
	}
	if c.MinRetryDelayMillis > c.MaxRetryDelayMillis {
		return fmt.Errorf("min_retry_delay_ms must not exceed max_retry_delay_ms")
	}
	c.maxSegmentAge = time.Duration(c.MaxSegmentAgeMillis) * time.Millisecond
	c.minRetryDelay = time.Duration(c.MinRetryDelayMillis) * time.Millisecond
	c.maxRetryDelay = time.Duration(c.MaxRetryDelayMillis) * time.Millisecond
	return nil
}
