// Package promreg registers our plugins' Prometheus collectors in OPA's
// registry so that a plugin created again (OPA reloading its plugins) keeps
// counting in the collectors already registered.
package promreg

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Registered registers c, or returns the collector of the same
// description already registered (of c's type).
func Registered[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}
