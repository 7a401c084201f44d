package extauthz

import (
	"fmt"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/util"
)

// PluginName is the key under `plugins` in OPA's configuration.
const PluginName = "envoy_ext_authz_grpc"

// Defaults, as upstream's.
const (
	defaultAddr           = ":9191"
	defaultPath           = "envoy/authz/allow"
	defaultMaxRecvMsgSize = 4 * 1024 * 1024
)

// Config is the plugin's configuration block.
type Config struct {
	Addr                 string `json:"addr"`
	Path                 string `json:"path"`
	DryRun               bool   `json:"dry-run"`
	SkipRequestBodyParse bool   `json:"skip-request-body-parse"`
	MaxRecvMsgSize       int    `json:"grpc-max-recv-msg-size"`
	// MaxBodyDepth bounds the nesting of a JSON body; a deeper one is
	// refused (body.go).
	MaxBodyDepth int `json:"max-body-depth"`
	// Admission bounds the Checks evaluated at once (admission.go).
	Admission *AdmissionConfig `json:"admission"`
	// LabelsPath names the document that labels a request the policy did
	// not decide (shed, refused by the plugin, failed) for the decision
	// metrics (decisionmetrics.go); empty: such requests are labelled none.
	// It must depend on the request's method and path only: its answers are
	// kept per method and path until the policy changes.
	LabelsPath string `json:"labels-path"`
	// MetricTenants are the tenants counted on their own in
	// nexus_tenant_decisions_total (at most maxMetricTenants).
	MetricTenants []string `json:"metric-tenants"`
	// DeliveryEntries and DeliveryTTLSeconds bound the table that matches
	// answers with Envoy's access log (delivery.go).
	DeliveryEntries    int `json:"delivery-entries"`
	DeliveryTTLSeconds int `json:"delivery-ttl-seconds"`
	// Reservations hold each allowed priced chat's worst case against its
	// budgets until the state bundle counts its spend (reservations.go);
	// nil: on, with the defaults.
	Reservations *ReservationConfig `json:"reservations"`
	// Shadow evaluates a sample of answered Checks against a candidate
	// bundle (shadow.go); nil: no shadow.
	Shadow *ShadowConfig `json:"shadow"`

	query        string
	labelsQuery  string
	admission    admission
	reservations reservationSettings
	deliveryTTL  time.Duration
}

func (c *Config) inputOptions() inputOptions {
	return inputOptions{skipBodyParse: c.SkipRequestBodyParse, maxBodyDepth: c.MaxBodyDepth}
}

// Factory validates configuration and creates the plugin.
type Factory struct{}

// Validate parses the plugin's configuration and fills in defaults.
func (Factory) Validate(m *plugins.Manager, raw []byte) (any, error) {
	cfg := Config{
		Addr: defaultAddr, Path: defaultPath, MaxRecvMsgSize: defaultMaxRecvMsgSize, MaxBodyDepth: defaultMaxBodyDepth,
		DeliveryEntries: defaultDeliveryEntries, DeliveryTTLSeconds: int(defaultDeliveryTTL.Seconds()),
	}
	if err := util.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", PluginName, err)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", PluginName, err)
	}
	if cfg.Shadow != nil {
		if err := cfg.Shadow.validate(m); err != nil {
			return nil, fmt.Errorf("%s: %w", PluginName, err)
		}
	}
	return &cfg, nil
}

func (c *Config) validate() error {
	if c.Addr == "" {
		return fmt.Errorf("addr must not be empty")
	}
	if c.MaxRecvMsgSize <= 0 {
		return fmt.Errorf("grpc-max-recv-msg-size must be positive")
	}
	if c.MaxBodyDepth <= 0 {
		return fmt.Errorf("max-body-depth must be positive")
	}
	if c.DeliveryEntries <= 0 || c.DeliveryTTLSeconds <= 0 {
		return fmt.Errorf("delivery-entries and delivery-ttl-seconds must be positive")
	}
	c.deliveryTTL = time.Duration(c.DeliveryTTLSeconds) * time.Second
	admission, err := c.Admission.resolve()
	if err != nil {
		return err
	}
	c.admission = admission
	if c.reservations, err = c.Reservations.resolve(); err != nil {
		return err
	}
	ref, err := ast.PtrRef(ast.DefaultRootDocument, c.Path)
	if err != nil || len(ref) < 2 {
		return fmt.Errorf("path %q does not name a document under data", c.Path)
	}
	c.query = ref.String()
	if c.LabelsPath != "" {
		ref, err := ast.PtrRef(ast.DefaultRootDocument, c.LabelsPath)
		if err != nil || len(ref) < 2 {
			return fmt.Errorf("labels-path %q does not name a document under data", c.LabelsPath)
		}
		c.labelsQuery = ref.String()
	}
	if len(c.MetricTenants) > maxMetricTenants {
		return fmt.Errorf("metric-tenants names %d tenants, more than %d: each adds series to every scrape", len(c.MetricTenants), maxMetricTenants)
	}
	for _, t := range c.MetricTenants {
		if !labelValue.MatchString(t) {
			return fmt.Errorf("metric-tenants: %q is not a tenant id", t)
		}
	}
	return nil
}
