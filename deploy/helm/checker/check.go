package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// maxDocumentBytes bounds one YAML document: a rendered object is far smaller.
const maxDocumentBytes = 4 << 20

// Result is what was found in one document of a manifest stream.
type Result struct {
	Index    int
	Kind     string
	Name     string
	Problems []string
}

// customKinds are the CRD kinds the chart may render; k8s.io/api has no type for them, so
// they are reported as not decoded rather than passed silently.
var customKinds = map[schema.GroupVersionKind]bool{
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}: true,
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "PrometheusRule"}: true,
}

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme,
		networkingv1.AddToScheme, autoscalingv2.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// CheckStream decodes every non-empty YAML document of r strictly and checks it.
func CheckStream(r io.Reader) ([]Result, error) {
	scheme := newScheme()
	strict := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
	reader := utilyaml.NewYAMLReader(bufio.NewReaderSize(r, maxDocumentBytes))
	var results []Result
	for index := 0; ; index++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return results, nil
		}
		if err != nil {
			return results, fmt.Errorf("document %d: %w", index, err)
		}
		if isBlank(doc) {
			continue
		}
		results = append(results, checkDocument(strict, index, doc))
	}
}

func isBlank(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		t := strings.TrimSpace(line)
		if t != "" && t != "---" && !strings.HasPrefix(t, "#") {
			return false
		}
	}
	return true
}

func checkDocument(strict runtime.Decoder, index int, doc []byte) Result {
	result := Result{Index: index, Kind: "?", Name: "?"}
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := utilyaml.Unmarshal(doc, &meta); err != nil {
		result.Problems = append(result.Problems, fmt.Sprintf("not YAML: %v", err))
		return result
	}
	result.Kind, result.Name = meta.Kind, meta.Metadata.Name
	gvk := schema.FromAPIVersionAndKind(meta.APIVersion, meta.Kind)
	if customKinds[gvk] {
		return result
	}
	obj, _, err := strict.Decode(doc, nil, nil)
	if err != nil {
		result.Problems = append(result.Problems, err.Error())
		return result
	}
	if result.Name == "" {
		result.Problems = append(result.Problems, "metadata.name is empty")
	}
	if spec := podSpecOf(obj); spec != nil {
		result.Problems = append(result.Problems, checkPodSpec(spec)...)
	}
	return result
}
