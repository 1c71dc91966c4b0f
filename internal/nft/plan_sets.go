package nft

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/nodefw/nodefw/internal/compile"
)

// encodeNamedSet adds a named set to the plan: its key type, the
// expressions that load its key into consecutive registers, and its
// elements, each field padded to whole 32-bit registers as the kernel
// compares them.
func (p *plan) encodeNamedSet(s *compile.Set) error {
	switch {
	case s.Name == "" || len(s.Name) >= unix.NFT_SET_MAXNAMELEN || strings.HasPrefix(s.Name, "__"):
		return errors.New("invalid set name")
	case p.hasSet(s.Name):
		return errors.New("set appears twice")
	case s.Family != compile.FamilyIPv4 && s.Family != compile.FamilyIPv6:
		return fmt.Errorf("set family must be IPv4 or IPv6, not %v", s.Family)
	case len(s.Fields) == 0:
		return errors.New("set has no key fields")
	}
	keyType, loads, err := keyLoads(s)
	if err != nil {
		return err
	}
	elems, size, err := encodeElements(s, keyType)
	if err != nil {
		return err
	}
	p.ids++
	ns := namedSet{
		set: &nftables.Set{
			Name:          s.Name,
			ID:            p.ids,
			Interval:      !s.Exact,
			Concatenation: true,
			KeyType:       keyType,
			// Every element gets a counter of its own: the kernel gives
			// each added element a copy of the set's counter expression.
			Counter: s.Counter,
		},
		elems:  elems,
		size:   size,
		loads:  loads,
		family: s.Family,
	}
	p.byName[s.Name] = len(p.named)
	p.named = append(p.named, ns)
	chunks := (size + maxElemChunk - 1) / maxElemChunk
	p.msgs += 1 + chunks
	p.bytes += 256 + size + 128*chunks
	return nil
}

// hasSet reports whether the plan has a named set called name.
func (p *plan) hasSet(name string) bool {
	_, ok := p.byName[name]
	return ok
}

// keyLoads returns a set's key type and the expressions that load a
// packet's key: the first field into register 1, as nft does, the others
// into the 32-bit registers that follow it, addresses masked to the
// set's prefix length where it has one.
func keyLoads(s *compile.Set) (nftables.SetDatatype, []expr.Any, error) {
	types := make([]nftables.SetDatatype, len(s.Fields))
	var loads []expr.Any
	word := 0 // offset of the field in 32-bit registers
	for i, f := range s.Fields {
		t, err := setFieldType(f, s.Family)
		if err != nil {
			return nftables.SetDatatype{}, nil, err
		}
		types[i] = t
		r := uint32(unix.NFT_REG32_00 + word)
		if i == 0 {
			r = reg
		}
		switch f {
		case compile.FieldL4Proto:
			loads = append(loads, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r})
		case compile.FieldDPort:
			loads = append(loads, &expr.Payload{DestRegister: r, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		case compile.FieldSAddr, compile.FieldDAddr:
			offset := map[bool]uint32{true: 12, false: 16}[f == compile.FieldSAddr]
			if s.Family == compile.FamilyIPv6 {
				offset = map[bool]uint32{true: 8, false: 24}[f == compile.FieldSAddr]
			}
			loads = append(loads, &expr.Payload{DestRegister: r, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: t.Bytes})
			if bits := s.AddrBits(f); bits > 0 {
				if bits >= int(t.Bytes)*8 {
					return nftables.SetDatatype{}, nil, fmt.Errorf("%v masked to %d bits", f, bits)
				}
				loads = append(loads, &expr.Bitwise{SourceRegister: r, DestRegister: r, Len: t.Bytes,
					Mask: compile.AddrMask(s.Family, bits).AsSlice(), Xor: make([]byte, t.Bytes)})
			}
		}
		word += int(t.Bytes+3) / 4
	}
	if word > 16 {
		return nftables.SetDatatype{}, nil, errors.New("set key longer than the registers")
	}
	keyType, err := nftables.ConcatSetType(types...)
	if err != nil {
		return nftables.SetDatatype{}, nil, err
	}
	return keyType, loads, nil
}

// encodeElements encodes a set's elements, and returns them with their
// encoded size. An exact set's element is one key: its lasts must be where
// the set's masks make every packet of the element land on its firsts.
func encodeElements(s *compile.Set, keyType nftables.SetDatatype) ([]nftables.SetElement, int, error) {
	elems := make([]nftables.SetElement, len(s.Elements))
	keyLen := int(keyType.Bytes)
	masks := keyMasks(s, keyLen)
	// One array holds every key: an element each is a lot of garbage.
	keys := make([]byte, 2*keyLen*len(s.Elements))
	size := 0
	for i := range s.Elements {
		buf := keys[2*keyLen*i : 2*keyLen*(i+1)]
		key, end, err := elementKeys(&s.Elements[i], s.Fields, s.Family, buf[:0:keyLen], buf[keyLen:keyLen:2*keyLen])
		if err != nil {
			return nil, 0, fmt.Errorf("element %d: %w", i, err)
		}
		if s.Exact {
			for j := range key {
				if key[j]&masks[j] != key[j] || end[j] != key[j]|^masks[j] {
					return nil, 0, fmt.Errorf("element %d: not one key of the set once masked", i)
				}
			}
			end = nil
		}
		// The rule an element counts for is its comment: the counters
		// read back name their rule without the plan, and an element
		// that changes rule is replaced, its count starting over.
		elems[i] = nftables.SetElement{Key: key, KeyEnd: end, Comment: s.Elements[i].Rule}
		size += elemSize(elems[i])
	}
	return elems, size, nil
}

// keyMasks has, per key byte, the bits a packet's key keeps: all of them
// but the host part of masked addresses.
func keyMasks(s *compile.Set, keyLen int) []byte {
	masks := make([]byte, 0, keyLen)
	for _, f := range s.Fields {
		t, _ := setFieldType(f, s.Family)
		m := bytes.Repeat([]byte{0xff}, int(t.Bytes))
		if bits := s.AddrBits(f); bits > 0 {
			m = compile.AddrMask(s.Family, bits).AsSlice()
		}
		masks = append(masks, m...)
		for len(masks)%4 != 0 {
			masks = append(masks, 0xff)
		}
	}
	return masks
}

// setFieldType is the kernel data type of set key fields, per family.
func setFieldType(f compile.SetField, fam compile.Family) (nftables.SetDatatype, error) {
	switch f {
	case compile.FieldL4Proto:
		return nftables.TypeInetProto, nil
	case compile.FieldDPort:
		return nftables.TypeInetService, nil
	case compile.FieldSAddr, compile.FieldDAddr:
		if fam == compile.FamilyIPv6 {
			return nftables.TypeIP6Addr, nil
		}
		return nftables.TypeIPAddr, nil
	}
	return nftables.SetDatatype{}, fmt.Errorf("unknown key field %d", f)
}

// elementKeys appends an element's first and last key to key and end.
func elementKeys(e *compile.SetElement, fields []compile.SetField, fam compile.Family, key, end []byte) ([]byte, []byte, error) {
	pad := func() {
		for len(key)%4 != 0 {
			key, end = append(key, 0), append(end, 0)
		}
	}
	for _, f := range fields {
		switch f {
		case compile.FieldL4Proto:
			if e.L4Proto.First > e.L4Proto.Last {
				return nil, nil, errors.New("empty protocol range")
			}
			key, end = append(key, e.L4Proto.First), append(end, e.L4Proto.Last)
		case compile.FieldDPort:
			if e.DPort.First > e.DPort.Last {
				return nil, nil, errors.New("empty port range")
			}
			key, end = binary.BigEndian.AppendUint16(key, e.DPort.First), binary.BigEndian.AppendUint16(end, e.DPort.Last)
		case compile.FieldSAddr, compile.FieldDAddr:
			r := e.SAddr
			if f == compile.FieldDAddr {
				r = e.DAddr
			}
			// IPv4-mapped IPv6 addresses are IPv6 addresses here, as in the
			// rules: they match IPv6 packets that carry them.
			if !r.First.IsValid() || !r.Last.IsValid() || r.First.Is4() != (fam == compile.FamilyIPv4) ||
				r.Last.Is4() != (fam == compile.FamilyIPv4) || r.First.Zone() != "" || r.Last.Zone() != "" {
				return nil, nil, fmt.Errorf("address range %v-%v is not of the set's family", r.First, r.Last)
			}
			if r.Last.Less(r.First) {
				return nil, nil, errors.New("empty address range")
			}
			key, end = append(key, r.First.AsSlice()...), append(end, r.Last.AsSlice()...)
		}
		pad()
	}
	return key, end, nil
}

// elemSize is the encoded size of one set element.
func elemSize(e nftables.SetElement) int {
	n := 4 + 8 + align4(len(e.Key)) // element, key nest, key value
	if e.IntervalEnd {
		n += 8
	}
	if len(e.KeyEnd) > 0 {
		n += 8 + align4(len(e.KeyEnd))
	}
	if e.Comment != "" {
		n += 4 + align4(2+len(e.Comment)+1) // userdata: type, length, text, NUL
	}
	return n
}

func align4(n int) int { return (n + 3) &^ 3 }
