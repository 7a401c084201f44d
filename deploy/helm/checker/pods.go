package main

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func podSpecOf(obj runtime.Object) *corev1.PodSpec {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return &o.Spec.Template.Spec
	case *appsv1.StatefulSet:
		return &o.Spec.Template.Spec
	case *appsv1.DaemonSet:
		return &o.Spec.Template.Spec
	case *batchv1.Job:
		return &o.Spec.Template.Spec
	case *corev1.Pod:
		return &o.Spec
	}
	return nil
}

// checkPodSpec holds every pod the chart renders to the secure defaults of issue 16: non-root,
// read-only root filesystem, RuntimeDefault seccomp, no privilege escalation, all capabilities
// dropped, requests and limits, and (for long-running pods) readiness and liveness probes.
func checkPodSpec(spec *corev1.PodSpec) []string {
	var problems []string
	pod := spec.SecurityContext
	if pod == nil || pod.RunAsNonRoot == nil || !*pod.RunAsNonRoot {
		problems = append(problems, "pod: securityContext.runAsNonRoot must be true")
	}
	if pod == nil || pod.SeccompProfile == nil || pod.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		problems = append(problems, "pod: securityContext.seccompProfile.type must be RuntimeDefault")
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		problems = append(problems, "pod: host namespaces are refused")
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		problems = append(problems, "pod: automountServiceAccountToken must be false")
	}
	longRunning := spec.RestartPolicy != corev1.RestartPolicyNever && spec.RestartPolicy != corev1.RestartPolicyOnFailure
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		problems = append(problems, checkContainer(c, longRunning)...)
	}
	return problems
}

func checkContainer(c corev1.Container, longRunning bool) []string {
	var problems []string
	say := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf("container %s: ", c.Name)+fmt.Sprintf(format, args...))
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		say("has no securityContext")
	default:
		if sc.Privileged != nil && *sc.Privileged {
			say("privileged containers are refused")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			say("allowPrivilegeEscalation must be false")
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			say("readOnlyRootFilesystem must be true")
		}
		if sc.Capabilities == nil || !dropsAll(sc.Capabilities.Drop) || len(sc.Capabilities.Add) > 0 {
			say("capabilities must drop ALL and add none")
		}
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			say("no %s request", r)
		}
		if _, ok := c.Resources.Limits[r]; !ok {
			say("no %s limit", r)
		}
	}
	if longRunning {
		if c.ReadinessProbe == nil {
			say("no readinessProbe")
		}
		if c.LivenessProbe == nil {
			say("no livenessProbe")
		}
	}
	return problems
}

func dropsAll(caps []corev1.Capability) bool {
	for _, c := range caps {
		if c == "ALL" {
			return true
		}
	}
	return false
}
