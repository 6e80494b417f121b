#!/usr/bin/env python3
"""Write the hand-made seed inputs under fuzz/seeds/<target>/ (committed).

Run from anywhere: python3 fuzz/make_seeds.py. The sharing_rule seeds are
`arbitrary`-encoded and were picked from a minimised corpus instead; this
script leaves them alone. Byte order is little-endian (x86_64, aarch64).
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# xs_wire message types
DIRECTORY, READ, GET_PERMS, WATCH, UNWATCH = 1, 2, 3, 4, 5
TX_START, TX_END, INTRODUCE, RELEASE, GET_DOMAIN_PATH = 6, 7, 8, 9, 10
WRITE, MKDIR, RM, SET_PERMS, WATCH_EVENT, ERROR = 11, 12, 13, 14, 15, 16
IS_INTRODUCED, CONTROL, RESET_WATCHES, DIRECTORY_PART = 17, 0, 21, 22


def msg(ty, req, tx, payload):
    return struct.pack("<IIII", ty, req, tx, len(payload)) + payload


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- wire_client: [mode][nops][ops...][stream] ----
def client_raw(ops, stream):
    return bytes([0x00, len(ops) - 1]) + bytes(ops) + stream


def client_resp(ops, chunks):
    out = bytes([0x80, len(ops) - 1]) + bytes(ops)
    for ctl, b in chunks:
        out += bytes([ctl]) + struct.pack("<H", len(b)) + b
    return out


write("wire_client", "read", client_raw([0], msg(READ, 1, 0, b"/dev/loop0")))
write("wire_client", "directory", client_raw([1], msg(DIRECTORY, 1, 0, b"1\x002\x00")))
write("wire_client", "directory-part",
      client_raw([1], msg(ERROR, 1, 0, b"E2BIG\x00")
                 + msg(DIRECTORY_PART, 2, 0, b"5\x00a\x00b\x00")
                 + msg(DIRECTORY_PART, 3, 0, b"5\x00\x00")))
write("wire_client", "read-many-with-event",
      client_raw([2], msg(READ, 1, 0, b"x")
                 + msg(WATCH_EVENT, 0, 0, b"backend/vbd\x00tok\x00")
                 + msg(ERROR, 3, 0, b"ENOENT\x00")
                 + msg(READ, 2, 0, b"y")))
write("wire_client", "tx-start-then-watch",
      client_raw([3, 4], msg(TX_START, 1, 0, b"12\x00")
                 + msg(WATCH_EVENT, 0, 0, b"backend/vbd/1\x00tok\x00")))
write("wire_client", "responsive",
      client_resp([1, 3, 2], [
          (1, b"E2BIG\x00"),            # directory: too big
          (0, b"3\x00x\x00y\x00\x00"),   # directory_part: whole list
          (0, b"4\x00"),                # transaction_start
          (0, b"a"),                    # read_many: 1st
          (2, b"p\x00t\x00"),           # a watch event in between
          (0, b"b"),                    # 2nd
          (1, b"ENOENT\x00"),           # 3rd: missing
      ]))
write("wire_client", "responsive-home-write",
      client_resp([7, 8, 6], [(0, b"3"), (1, b"EAGAIN\x00"), (1, b"EAGAIN\x00")]))

# ---- wire_server: [mode][stream] or [0x80]([conn][len16][bytes])* ----
B = b"backend/vbd/1/51712"
single = b"".join([
    msg(WRITE, 1, 0, B + b"/params\x00/srv/disk.img"),
    msg(READ, 2, 0, B + b"/params\x00"),
    msg(DIRECTORY, 3, 0, B + b"\x00"),
    msg(DIRECTORY_PART, 4, 0, b"backend/vbd\x000\x00"),
    msg(GET_PERMS, 5, 0, B + b"\x00"),
    msg(SET_PERMS, 6, 0, B + b"\x00n0\x00r5\x00"),
    msg(MKDIR, 7, 0, b"/x/y\x00"),
    msg(RM, 8, 0, b"/x\x00"),
])
write("wire_server", "basic", b"\x00" + single)
write("wire_server", "transaction", b"\x00" + b"".join([
    msg(TX_START, 1, 0, b"\x00"),
    msg(WRITE, 2, 1, B + b"/state\x004"),
    msg(READ, 3, 1, B + b"/state\x00"),
    msg(TX_END, 4, 1, b"T\x00"),
    msg(TX_END, 5, 1, b"F\x00"),
]))
write("wire_server", "domains", b"\x00" + b"".join([
    msg(GET_DOMAIN_PATH, 1, 0, b"7\x00"),
    msg(INTRODUCE, 2, 0, b"7\x0012\x003\x00"),
    msg(IS_INTRODUCED, 3, 0, b"7\x00"),
    msg(RELEASE, 4, 0, b"7\x00"),
    msg(CONTROL, 5, 0, b"print\x00hello\x00"),
    msg(RESET_WATCHES, 6, 0, b""),
]))
write("wire_server", "oversized", b"\x00" + struct.pack("<IIII", READ, 1, 0, 5000) + b"x" * 8)


def seg(conn, b):
    return bytes([conn]) + struct.pack("<H", len(b)) + b


write("wire_server", "two-conns-watch-and-race", b"\x80" + b"".join([
    seg(0, msg(WATCH, 1, 0, b"backend\x00tok\x00") + msg(TX_START, 2, 0, b"\x00")
        + msg(READ, 3, 1, B + b"\x00")),
    seg(1, msg(WRITE, 1, 0, B + b"\x00v")),
    seg(0, msg(WRITE, 4, 1, B + b"\x00w") + msg(TX_END, 5, 1, b"T\x00")),
    seg(0x80, msg(UNWATCH, 6, 0, b"backend\x00tok\x00")),
]))

# ---- backend_spec: flags 0xFF path 0xFF params ... (see the target) ----
SEP = b"\xff"


def spec(flags, path=b"", params=b"\xfe", mode=b"\xfe", script=b"\xfe", ty=b"\xfe",
         front=b"\xfe", state=b"\xfe", pdev=b"\xfe", ppath=b"\xfe", node=b"\xfe", extra=()):
    fields = [bytes([flags]), path, params, mode, script, ty, front, state, pdev, ppath, node]
    for p, v in extra:
        fields += [p, v]
    return SEP.join(fields)


disk = b"\xfd\x00"  # the fixture disk.img
write("backend_spec", "file-w", spec(1, params=disk, mode=b"w", ty=b"file", front=b"7", state=b"2"))
write("backend_spec", "phy-r-relative", spec(1, params=b"loop1", mode=b"r", ty=b"phy", front=b"7", state=b"2"))
write("backend_spec", "shared-other-vm", spec(  # busy
    1, params=disk, mode=b"w", front=b"7", state=b"2",
    extra=[(b"backend/vbd/9/51712/physical-device-path", disk),
           (b"backend/vbd/9/51712/mode", b"w"),
           (b"/local/domain/7/vm", b"/vm/a"),
           (b"/local/domain/9/vm", b"/vm/b")]))
write("backend_spec", "shared-stubdom", spec(  # same VM through target: connected
    1, params=disk, mode=b"w", front=b"7", state=b"2",
    extra=[(b"backend/vbd/9/51712/physical-device-path", disk),
           (b"backend/vbd/9/51712/mode", b"w"),
           (b"/local/domain/7/vm", b"/vm/a"),
           (b"/local/domain/9/vm", b"/vm/b"),
           (b"/local/domain/9/target", b"7")]))
write("backend_spec", "already-prepared", spec(1, params=b"/dev/loop0", mode=b"r", front=b"3", pdev=b"7:0"))
write("backend_spec", "custom-script", spec(1, params=disk, mode=b"w", script=b"/etc/xen/scripts/block-iscsi", front=b"7"))
write("backend_spec", "hostile-values", spec(
    3, path=b"/local/domain/0/backend/vbd/12/768/", params=b"/proc/../sys/../dev/\x00null",
    mode=b"rw!\x80", front=b" 12 ", state=b"\xc3\x28", ty=b"x" * 4096))
write("backend_spec", "dotdot", spec(1, params=b"../../etc/shadow", mode=b"r", front=b"7"))
# Regression: a second sign in a permission's domid (SET_PERMS) overflowed.
write("wire_server", "set-perms-double-sign", b"\x00" + msg(SET_PERMS, 1, 0, b"/a\x00r--9223372036854775808\x00"))
