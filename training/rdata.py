#!/usr/bin/env python3
"""Reads R data without R: a minimal reader of R's XDR serialization (version 2 and 3) and of lazy-load databases
(the data/Rdata.rdx + Rdata.rdb pair of an installed R package), enough for character vectors, lists and their
attributes. Used by build_default_corpus.py for the Jane Austen novels in Debian's r-cran-janeaustenr.

    python3 rdata.py PACKAGE/data/Rdata      # prints each object's name and length
"""
import struct, zlib, bz2, lzma
class RVec(list):
    attrs={}
class R:
    def __init__(s, b): s.b=b; s.p=0; s.refs=[]
    def i(s): v=struct.unpack_from('>i',s.b,s.p)[0]; s.p+=4; return v
    def item(s):
        f=s.i(); t=f&0xff; attr=f&(1<<9); tag=f&(1<<10)
        if t in (254,253,242,241,251,247,252): return None
        if t==255:
            k=f>>8
            return s.refs[(k if k else s.i())-1]
        if t==1: v=('sym',s.item()); s.refs.append(v); return v
        if t in (2,6,17):  # pairlist-like
            out=[]
            while True:
                a=s.item() if attr else None
                g=s.item() if tag else None
                car=s.item(); out.append((g,car))
                f=s.i(); t2=f&0xff; attr=f&(1<<9); tag=f&(1<<10)
                if t2==254: return out
                if t2 not in (2,6,17): raise ValueError(t2)
        if t==9:
            n=s.i()
            if n==-1: return None
            v=s.b[s.p:s.p+n].decode('utf-8','replace'); s.p+=n; return v
        if t in (10,13,14,16,19,20):
            n=s.i()
            if n==-1: n=(s.i()<<32)+s.i()
            if t in (10,13): v=list(struct.unpack_from('>%di'%n,s.b,s.p)); s.p+=4*n
            elif t==14: v=list(struct.unpack_from('>%dd'%n,s.b,s.p)); s.p+=8*n
            else: v=[s.item() for _ in range(n)]
            v=RVec(v)
            if attr: v.attrs={g[1]: a for g,a in s.item()}
            return v
        if t==238: info=s.item(); state=s.item(); a=s.item(); return state
        raise ValueError('type %d at %d'%(t,s.p))
def unserialize(b):
    assert b[:2]==b'X\n'
    r=R(b); r.p=2; ver=r.i(); r.i(); r.i()
    if ver==3: n=r.i(); r.p+=n
    return r.item()
def decompress(b):
    n=struct.unpack('>I',b[:4])[0]
    if b[4:5] in (b'Z',): return lzma.decompress(b[5:])
    if b[4:5]==b'2': return bz2.decompress(b[5:])
    if b[4:5]==b'0': return b[5:]
    return zlib.decompress(b[4:])
def load_rdb(base):
    """{name: object} of an R lazy-load database (base.rdx gzip-serialized index, base.rdb compressed blobs)."""
    import gzip
    idx=unserialize(gzip.decompress(open(base+'.rdx','rb').read()))
    parts=dict(zip(idx.attrs['names'], idx))
    db=open(base+'.rdb','rb').read()
    out={}
    for name,(off,ln) in zip(parts['variables'].attrs['names'], parts['variables']):
        out[name]=unserialize(decompress(db[int(off):int(off)+int(ln)]))
    return out


if __name__ == "__main__":
    import sys
    for name, value in load_rdb(sys.argv[1]).items():
        print(name, len(value))
