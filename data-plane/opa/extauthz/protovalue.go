package extauthz

import (
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// protoValue is msg as OPA would see it after protojson.Marshal and a JSON
// decode, built without the JSON in between: the same field names
// (lowerCamelCase JSON names), the same encodings (64-bit integers as
// decimal strings, bytes as padded base64, enums by name, floats formatted
// as protojson formats them, Timestamps in RFC 3339 with 0, 3, 6 or 9
// fractional digits, Struct/Value/ListValue as plain JSON), and only the
// populated fields, as protojson without EmitUnpopulated.
//
// Strings are taken as they are: gRPC refuses a message whose string
// fields are not UTF-8 before Check is called, so protojson's own check
// would never fail here.
//
// Well-known types other than Timestamp, Struct, Value and ListValue (Any,
// Duration, wrappers, FieldMask, Empty) do not occur in the attributes
// Envoy sends today; they are encoded by protojson itself, so they stay
// exact if they ever do.
func protoValue(msg protoreflect.Message) (ast.Value, error) {
	switch msg.Descriptor().FullName() {
	case "google.protobuf.Timestamp":
		return timestampValue(msg)
	case "google.protobuf.Struct":
		fd := msg.Descriptor().Fields().ByName("fields")
		return mapValue(msg.Get(fd).Map(), fd)
	case "google.protobuf.ListValue":
		fd := msg.Descriptor().Fields().ByName("values")
		return listValue(msg.Get(fd).List(), fd)
	case "google.protobuf.Value":
		return knownValue(msg)
	}
	if msg.Descriptor().FullName().Parent() == "google.protobuf" {
		return viaProtojson(msg)
	}

	// One allocation for every value term of the message: no more fields
	// than the descriptor has can be set, so values never moves.
	n := msg.Descriptor().Fields().Len()
	pairs := make([][2]*ast.Term, 0, n)
	values := make([]ast.Term, n)
	var err error
	msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		var value ast.Value
		switch {
		case fd.IsMap():
			value, err = mapValue(v.Map(), fd)
		case fd.IsList():
			value, err = listValue(v.List(), fd)
		default:
			value, err = singularValue(v, fd)
		}
		if err != nil {
			return false
		}
		term := &values[len(pairs)]
		term.Value = value
		pairs = append(pairs, [2]*ast.Term{fieldName(fd), term})
		return true
	})
	if err != nil {
		return nil, err
	}
	return ast.NewObject(pairs...), nil
}

// fieldNames holds one key term per field, shared by every request: keys
// are never mutated, and the CheckRequest has a few dozen fields.
var fieldNames sync.Map // protoreflect.FieldDescriptor -> *ast.Term

func fieldName(fd protoreflect.FieldDescriptor) *ast.Term {
	if t, ok := fieldNames.Load(fd); ok {
		return t.(*ast.Term)
	}
	t, _ := fieldNames.LoadOrStore(fd, ast.StringTerm(fd.JSONName()))
	return t.(*ast.Term)
}

func mapValue(m protoreflect.Map, fd protoreflect.FieldDescriptor) (ast.Value, error) {
	valueFD := fd.MapValue()
	pairs := make([][2]*ast.Term, 0, m.Len())
	terms := make([]ast.Term, 2*m.Len()) // keys and values, one allocation
	var err error
	m.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		var value ast.Value
		if value, err = singularValue(v, valueFD); err != nil {
			return false
		}
		// Map keys are unique, and protojson writes every key kind
		// (string, integer, bool) as its plain text.
		key, val := &terms[2*len(pairs)], &terms[2*len(pairs)+1]
		key.Value, val.Value = ast.String(k.String()), value
		pairs = append(pairs, [2]*ast.Term{key, val})
		return true
	})
	if err != nil {
		return nil, err
	}
	return ast.NewObject(pairs...), nil
}

func listValue(l protoreflect.List, fd protoreflect.FieldDescriptor) (ast.Value, error) {
	terms := make([]*ast.Term, l.Len())
	slab := make([]ast.Term, l.Len())
	for i := range l.Len() {
		value, err := singularValue(l.Get(i), fd)
		if err != nil {
			return nil, err
		}
		slab[i].Value = value
		terms[i] = &slab[i]
	}
	return ast.NewArray(terms...), nil
}

func singularValue(v protoreflect.Value, fd protoreflect.FieldDescriptor) (ast.Value, error) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return ast.InternedValue(v.Bool()), nil
	case protoreflect.StringKind:
		return ast.String(v.String()), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return ast.Number(strconv.FormatInt(v.Int(), 10)), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return ast.Number(strconv.FormatUint(v.Uint(), 10)), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return ast.String(strconv.FormatInt(v.Int(), 10)), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ast.String(strconv.FormatUint(v.Uint(), 10)), nil
	case protoreflect.FloatKind:
		return floatValue(v.Float(), 32), nil
	case protoreflect.DoubleKind:
		return floatValue(v.Float(), 64), nil
	case protoreflect.BytesKind:
		return ast.String(base64.StdEncoding.EncodeToString(v.Bytes())), nil
	case protoreflect.EnumKind:
		if fd.Enum().FullName() == "google.protobuf.NullValue" {
			return ast.InternedNullValue, nil
		}
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return ast.String(ev.Name()), nil
		}
		return ast.Number(strconv.FormatInt(int64(v.Enum()), 10)), nil
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return protoValue(v.Message())
	default:
		return nil, fmt.Errorf("field %s has the unknown kind %v", fd.FullName(), fd.Kind())
	}
}

// floatValue writes a float as protojson does (the rules of encoding/json:
// shortest representation, exponent form below 1e-6 and from 1e21, a
// two-digit negative exponent shortened); NaN and the infinities are
// strings.
func floatValue(f float64, bits int) ast.Value {
	switch {
	case math.IsNaN(f):
		return ast.String("NaN")
	case math.IsInf(f, 1):
		return ast.String("Infinity")
	case math.IsInf(f, -1):
		return ast.String("-Infinity")
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	s := strconv.FormatFloat(f, format, -1, bits)
	if format == 'e' {
		if i := strings.LastIndex(s, "e-0"); i >= 0 && len(s) == i+4 {
			s = s[:i+2] + s[i+3:]
		}
	}
	return ast.Number(s)
}

// Timestamps protojson accepts: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
)

func timestampValue(msg protoreflect.Message) (ast.Value, error) {
	fields := msg.Descriptor().Fields()
	secs := msg.Get(fields.ByName("seconds")).Int()
	nanos := msg.Get(fields.ByName("nanos")).Int()
	if secs < minTimestampSeconds || secs > maxTimestampSeconds || nanos < 0 || nanos >= int64(time.Second) {
		return nil, fmt.Errorf("timestamp %d.%09d is out of range", secs, nanos)
	}
	s := time.Unix(secs, nanos).UTC().Format("2006-01-02T15:04:05.000000000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, ".000")
	return ast.String(s + "Z"), nil
}

// knownValue is a google.protobuf.Value: whichever of its kinds is set;
// like protojson, a Value with none set, or a NaN or infinite number,
// cannot be encoded.
func knownValue(msg protoreflect.Message) (ast.Value, error) {
	fd := msg.WhichOneof(msg.Descriptor().Oneofs().ByName("kind"))
	if fd == nil {
		return nil, fmt.Errorf("google.protobuf.Value has no kind set")
	}
	v := msg.Get(fd)
	if fd.Kind() == protoreflect.DoubleKind && (math.IsNaN(v.Float()) || math.IsInf(v.Float(), 0)) {
		return nil, fmt.Errorf("google.protobuf.Value holds %v, which JSON cannot", v.Float())
	}
	return singularValue(v, fd)
}

func viaProtojson(msg protoreflect.Message) (ast.Value, error) {
	raw, err := protojson.Marshal(msg.Interface())
	if err != nil {
		return nil, err
	}
	var v any
	if err := util.UnmarshalJSON(raw, &v); err != nil {
		return nil, err
	}
	return ast.InterfaceToValue(v)
}
