package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

const goodJob = `
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: migrate
          image: example/image:1
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {cpu: 200m, memory: 128Mi}
`

func check(t *testing.T, manifest string) []Result {
	t.Helper()
	results, err := CheckStream(strings.NewReader(manifest))
	if err != nil {
		t.Fatalf("CheckStream: %v", err)
	}
	return results
}

func problems(results []Result) string {
	var all []string
	for _, r := range results {
		all = append(all, r.Problems...)
	}
	return strings.Join(all, "\n")
}

func TestSecureJobPasses(t *testing.T) {
	results := check(t, goodJob)
	if len(results) != 1 || problems(results) != "" {
		t.Fatalf("want one clean result, got %+v", results)
	}
}

func TestCheckerRefuses(t *testing.T) {
	cases := []struct {
		name, from, to, want string
	}{
		{"unknown field", "restartPolicy: Never", "restartPolicy: Never\n      restartPolicyy: Never", `unknown field "spec.template.spec.restartPolicyy"`},
		{"duplicate field", "restartPolicy: Never", "restartPolicy: Never\n      restartPolicy: Never", "restartPolicy"},
		{"privileged", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: false\n            privileged: true", "privileged containers are refused"},
		{"writable root", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem must be true"},
		{"root", "runAsNonRoot: true", "runAsNonRoot: false", "runAsNonRoot must be true"},
		{"no seccomp", "seccompProfile: {type: RuntimeDefault}", "seccompProfile: {type: Unconfined}", "RuntimeDefault"},
		{"no limits", "limits: {cpu: 200m, memory: 128Mi}", "limits: {cpu: 200m}", "no memory limit"},
		{"unknown kind", "kind: Job", "kind: Jobb", "no kind \"Jobb\""},
		{"long-running without probes", "kind: Job", "kind: Pod", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			manifest := strings.Replace(goodJob, tc.from, tc.to, 1)
			if tc.name == "long-running without probes" {
				manifest = podWithoutProbes
			}
			got := problems(check(t, manifest))
			want := tc.want
			if want == "" {
				want = "no readinessProbe"
			}
			if !strings.Contains(got, want) {
				t.Fatalf("want a problem containing %q, got:\n%s", want, got)
			}
		})
	}
}

const podWithoutProbes = `
apiVersion: v1
kind: Pod
metadata: {name: server}
spec:
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: server
      image: example/image:1
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
      resources:
        requests: {cpu: 100m, memory: 64Mi}
        limits: {cpu: 200m, memory: 128Mi}
`

func TestCustomKindsAreNotDecodedButNamed(t *testing.T) {
	results := check(t, "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: m}\nspec: {anything: 1}\n")
	if len(results) != 1 || results[0].Kind != "ServiceMonitor" || problems(results) != "" {
		t.Fatalf("got %+v", results)
	}
}

func TestRunReportsFileAndDocument(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "manifest-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(goodJob + "---\n" + strings.Replace(goodJob, "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", 1)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var out, errs bytes.Buffer
	if code := run([]string{f.Name()}, nil, &out, &errs); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(errs.String(), f.Name()+": document 1 (Job migrate): container migrate: readOnlyRootFilesystem must be true") {
		t.Fatalf("stderr: %s", errs.String())
	}
	if !strings.Contains(out.String(), "checked 2 objects, 1 failed") {
		t.Fatalf("stdout: %s", out.String())
	}
}
