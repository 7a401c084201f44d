package extauthz

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/storage"
)

// Defaults and bounds of the shadow block.
const (
	defaultShadowQueueSize  = 256
	maxShadowQueueSize      = 65536
	defaultShadowBundleName = "nexus"
	// defaultShadowSizeLimit is OPA's own default bundle size limit.
	defaultShadowSizeLimit = 1 << 30
)

// ShadowConfig is the plugin's optional `shadow` block: a candidate bundle,
// fetched like one of OPA's `bundles` entries (service, resource, polling,
// signing), against which a sample of the Checks the plugin answered is
// evaluated again, off the request path (shadow.go).
type ShadowConfig struct {
	download.Config

	Service        string                     `json:"service"`
	Resource       string                     `json:"resource"`
	Signing        *bundle.VerificationConfig `json:"signing"`
	SizeLimitBytes int64                      `json:"size_limit_bytes"`
	// Bundle is the active bundle the candidate stands for (its revision is
	// the "active" side of each comparison).
	Bundle string `json:"bundle"`
	// SamplePercent is the share of decided Checks evaluated in shadow,
	// 0 to 100; 0 (the default) evaluates none.
	SamplePercent float64 `json:"sample_percent"`
	// QueueSize bounds the samples waiting for the worker; past it a
	// sample is dropped and counted, never waited for.
	QueueSize int `json:"queue_size"`
	// SharedRoots are data roots of other active bundles (the state
	// bundle's) the candidate is evaluated with, copied from the active
	// store into the candidate's whenever those bundles change.
	SharedRoots []string `json:"shared_roots"`

	sharedPaths []storage.Path
}

// validate fills in defaults and checks the block against the services
// and keys OPA's configuration declares. A candidate is only ever
// evaluated with a verified signature: with no `signing` block the
// signature is still required, by any configured key.
func (c *ShadowConfig) validate(m *plugins.Manager) error {
	if c.SamplePercent < 0 || c.SamplePercent > 100 {
		return fmt.Errorf("shadow: sample_percent %v is not between 0 and 100", c.SamplePercent)
	}
	if c.QueueSize == 0 {
		c.QueueSize = defaultShadowQueueSize
	}
	if c.QueueSize < 0 || c.QueueSize > maxShadowQueueSize {
		return fmt.Errorf("shadow: queue_size %d is not between 1 and %d", c.QueueSize, maxShadowQueueSize)
	}
	if c.Bundle == "" {
		c.Bundle = defaultShadowBundleName
	}
	if c.SizeLimitBytes == 0 {
		c.SizeLimitBytes = defaultShadowSizeLimit
	}
	if c.SizeLimitBytes < 0 {
		return errors.New("shadow: size_limit_bytes must be positive")
	}
	if c.Resource == "" {
		return errors.New("shadow: resource must name the candidate bundle")
	}
	if !slices.Contains(m.Services(), c.Service) {
		return fmt.Errorf("shadow: service %q is not one of the configured services %v", c.Service, m.Services())
	}
	keys := m.PublicKeys()
	if len(keys) == 0 {
		return errors.New("shadow: no keys configured; a candidate is evaluated only when its signature verifies")
	}
	if c.Signing == nil {
		c.Signing = bundle.NewVerificationConfig(keys, "", "", nil)
	}
	if err := c.Signing.ValidateAndInjectDefaults(keys); err != nil {
		return fmt.Errorf("shadow: signing: %w", err)
	}
	if err := c.Config.ValidateAndInjectDefaults(); err != nil {
		return fmt.Errorf("shadow: %w", err)
	}
	if *c.Trigger != plugins.TriggerPeriodic {
		return fmt.Errorf("shadow: trigger %q: the candidate is polled (periodic) only", *c.Trigger)
	}
	c.sharedPaths = c.sharedPaths[:0]
	for _, root := range c.SharedRoots {
		path, ok := storage.ParsePathEscaped("/" + strings.Trim(root, "/"))
		if !ok || len(path) == 0 {
			return fmt.Errorf("shadow: shared_roots: %q is not a data root", root)
		}
		c.sharedPaths = append(c.sharedPaths, path)
	}
	return nil
}
