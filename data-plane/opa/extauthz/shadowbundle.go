package extauthz

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"
)

// candidate is one verified candidate bundle, activated into a store and
// compiler of its own: the active bundle's store is only ever read (for
// the shared roots), never written.
type candidate struct {
	revision string
	store    storage.Store
	roots    []string
	prepared rego.PreparedEvalQuery
	// sharedFrom is the active revisions the shared roots were copied at.
	sharedFrom string
}

// Refusal reasons of a candidate bundle (nexus_shadow_bundle_refused_total).
const (
	refusedVerification = "verification" // unsigned, bad signature, unknown key, unreadable
	refusedActivation   = "activation"   // does not compile, or its roots overlap the shared ones
)

// newDownloader is OPA's own bundle downloader on the shadow block's
// service: long polling, ETags, size limits and signature verification
// (the bundle reader refuses a bundle whose signature does not verify,
// and one with no signature at all).
func (s *shadow) newDownloader() *download.Downloader {
	client := s.manager.Client(s.cfg.Service)
	return download.New(s.cfg.Config, client, s.cfg.Resource).
		WithCallback(s.onUpdate).
		WithBundleVerificationConfig(s.cfg.Signing).
		WithSizeLimitBytes(s.cfg.SizeLimitBytes).
		WithBundleName(s.cfg.Bundle).
		WithBundleParserOpts(s.manager.ParserOptions()).
		WithLogAttrs(map[string]any{"plugin": PluginName, "shadow": s.cfg.Bundle})
}

// onUpdate is the downloader's callback: a new candidate replaces the
// held one only once verified and activated; a refused one is counted and
// logged, and the previous candidate (verified when it came) stays.
func (s *shadow) onUpdate(ctx context.Context, u download.Update) error {
	if u.Error != nil {
		if httpErr, ok := errors.AsType[download.HTTPError](u.Error); ok && httpErr.StatusCode == http.StatusNotFound {
			// The control plane has no candidate for this region (the shadow ended):
			// the one held is dropped, so ending a shadow ends its evaluation.
			if s.current.Swap(nil) != nil {
				s.metrics.info.Reset()
				s.manager.Logger().Info("%s: no shadow candidate at %s any more; shadow evaluation stopped", PluginName, s.cfg.Resource)
			}
			return nil
		}
		if transportError(u.Error) {
			s.manager.Logger().Warn("%s: shadow bundle %s not fetched: %v", PluginName, s.cfg.Resource, u.Error)
			return nil
		}
		s.refuse(refusedVerification, u.Error)
		return nil
	}
	if u.Bundle == nil {
		return nil // 304: the held candidate is current
	}
	c, err := s.activate(ctx, u.Bundle)
	if err != nil {
		s.refuse(refusedActivation, err)
		return nil
	}
	s.current.Store(c)
	s.metrics.setRevision(c.revision)
	s.manager.Logger().Info("%s: shadow candidate %s at revision %s verified and activated", PluginName, s.cfg.Bundle, c.revision)
	return nil
}

func transportError(err error) bool {
	_, isHTTP := errors.AsType[download.HTTPError](err)
	_, isURL := errors.AsType[*url.Error](err)
	return isHTTP || isURL
}

func (s *shadow) refuse(reason string, err error) {
	s.metrics.refused.WithLabelValues(reason).Inc()
	s.manager.Logger().Error("%s: shadow bundle %s refused (%s), never evaluated: %v", PluginName, s.cfg.Resource, reason, err)
}

// activate loads b into a fresh in-memory store with OPA's own bundle
// activation (manifest, data and modules; compiled on a fresh compiler),
// then prepares the decision query on it.
func (s *shadow) activate(ctx context.Context, b *bundle.Bundle) (*candidate, error) {
	roots := b.Manifest.Roots
	if roots == nil {
		return nil, errors.New("the candidate names no roots (the default root overlaps every shared root)")
	}
	for _, path := range s.cfg.sharedPaths {
		for _, root := range *roots {
			if rootsOverlap(root, path.String()[1:]) {
				return nil, fmt.Errorf("the candidate's root %q overlaps the shared root %s", root, path)
			}
		}
	}
	store := inmem.NewWithOpts(inmem.OptRoundTripOnWrite(false))
	compiler := ast.NewCompiler().WithDefaultRegoVersion(s.manager.ParserOptions().RegoVersion)
	txn, err := store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return nil, err
	}
	err = bundle.Activate(&bundle.ActivateOpts{
		Ctx:           ctx,
		Store:         store,
		Txn:           txn,
		Compiler:      compiler,
		Metrics:       metrics.New(),
		Bundles:       map[string]*bundle.Bundle{s.cfg.Bundle: b},
		ParserOptions: s.manager.ParserOptions(),
	})
	if err != nil {
		store.Abort(ctx, txn)
		return nil, err
	}
	if err := store.Commit(ctx, txn); err != nil {
		return nil, err
	}
	pq, err := rego.New(
		rego.Query(s.query),
		rego.Compiler(compiler),
		rego.Store(store),
		rego.Runtime(s.manager.Info),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, err
	}
	return &candidate{revision: b.Manifest.Revision, store: store, roots: *roots, prepared: pq}, nil
}

func rootsOverlap(a, b string) bool {
	return a == b || a == "" || b == "" ||
		len(a) > len(b) && a[:len(b)] == b && a[len(b)] == '/' ||
		len(b) > len(a) && b[:len(a)] == a && b[len(a)] == '/'
}

// syncShared copies the shared roots from the active store into c's
// whenever the active bundles changed since the last copy, so the
// candidate sees the spend and disabled tenants the active policy sees.
func (s *shadow) syncShared(ctx context.Context, c *candidate, activeRevisions string) error {
	if len(s.cfg.sharedPaths) == 0 || c.sharedFrom == activeRevisions {
		return nil
	}
	txn, err := c.store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return err
	}
	for _, path := range s.cfg.sharedPaths {
		value, err := storage.ReadOne(ctx, s.manager.Store, path)
		if storage.IsNotFound(err) {
			value = map[string]any{}
		} else if err != nil {
			c.store.Abort(ctx, txn)
			return err
		}
		if len(path) > 1 {
			if err := storage.MakeDir(ctx, c.store, txn, path[:len(path)-1]); err != nil {
				c.store.Abort(ctx, txn)
				return err
			}
		}
		// A copy: the active store's value is never shared with the candidate's.
		if err := util.RoundTrip(&value); err != nil {
			c.store.Abort(ctx, txn)
			return err
		}
		if err := c.store.Write(ctx, txn, storage.AddOp, path, value); err != nil {
			c.store.Abort(ctx, txn)
			return err
		}
	}
	if err := c.store.Commit(ctx, txn); err != nil {
		return err
	}
	c.sharedFrom = activeRevisions
	return nil
}
