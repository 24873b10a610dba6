"""The machine: a Unicorn x86-64 CPU, RAM and the PC board, run in icount slices.

Time is the instruction count. The executor runs the CPU with `emu_start(count=N)`, each slice
ending exactly at the next device deadline (or earlier, exactly, when a device changes its mind
mid-slice), so interrupts land on exact instruction counts. A halted CPU idles: the icount jumps
to the next deadline (virtual time keeps going, as QEMU's icount with sleep=off does).

Every input that does not follow from the instruction stream goes through `self.seam`; in replay
the executor takes interrupts, wake-ups and input bytes from the log instead of the devices."""
from __future__ import annotations

import ctypes
import time
from typing import Callable, Optional

import capstone
import xxhash
from unicorn import (UC_ARCH_X86, UC_ERR_FETCH_UNMAPPED, UC_ERR_INSN_INVALID, UC_ERR_READ_UNMAPPED,
                     UC_ERR_WRITE_UNMAPPED, UC_HOOK_BLOCK, UC_HOOK_INSN, UC_HOOK_INTR,
                     UC_HOOK_MEM_INVALID, UC_MODE_64, UC_PROT_ALL, Uc, UcError)
from unicorn import x86_const as X
from unicorn.unicorn_py3.arch.intel import HOOK_INSN_CPUID_CFUNC
from unicorn.unicorn_py3.unicorn import uccallback

from cpu import boot, cpumode, cpustate
from cpu.board import Board, BoardContext
from cpu.devices.ata import AtaDisk
from cpu.devices.debugport import DebugCon, DebugExit
from cpu.devices.pic import Pic8259Pair
from cpu.devices.pit import Pit8254
from cpu.devices.rtc import Rtc146818
from cpu.devices.uart import Uart16550
from cpu.disk import DiskImage
from cpu.following import Follower
from cpu.icount import SliceCounter
from cpu.interrupts import IF, InterruptDelivery, InterruptError
from cpu.loader import Kernel
from cpu.outcome import EXIT_REASON, FAULT_REASON, GuestError, RecordedFault, Stop
from cpu.pagetrack import PageTracker
from cpu.syscall import SyscallFault, SyscallTransfer
from cpu.ram import Ram
from cpu.timers import TimerQueue
from replay.digest import OutputDigest
from replay.player import Divergence
from replay.seam import Seam

MAX_SLICE = 1 << 17  # longest slice: bounds Python overhead, not correctness
DIGEST_INTERVAL = 1 << 20  # icounts between state digests in a recording
END_ADDRESS = (1 << 64) - 1  # never reached: slices end by count only
EXCEPTIONS = {0: "#DE divide error", 1: "#DB debug", 3: "#BP breakpoint (int3)", 4: "#OF overflow",
              5: "#BR bound range", 6: "#UD invalid opcode", 7: "#NM device not available",
              8: "#DF double fault", 10: "#TS invalid TSS", 11: "#NP segment not present",
              12: "#SS stack fault", 13: "#GP general protection", 14: "#PF page fault",
              16: "#MF x87 error", 17: "#AC alignment check", 18: "#MC machine check",
              19: "#XM SIMD exception"}


class Machine:
    def __init__(self, kernel: Kernel, ram_size: int, shift: int, seam: Seam,
                 disk: Optional[DiskImage] = None,
                 serial_out: Callable[[bytes], None] = lambda b: None,
                 debugcon_out: Callable[[bytes], None] = lambda b: None,
                 sleep: bool = False, cmdline: str = "") -> None:
        self.kernel = kernel
        self.cmdline = cmdline  # what the guest gets as its command line (see cpu/boot.py)
        self.shift = shift
        self.sleep = sleep
        self.seam = seam
        seam.core.now = self.now
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.uc.ctl_set_cpu_model(X.UC_CPU_X86_WESTMERE)  # no RDRAND: it traps and is logged
        self.ram = Ram(ram_size)
        self.uc.mem_map_ptr(0, ram_size, UC_PROT_ALL, self.ram.address)
        self.pages = PageTracker(self.ram)
        self.counter = SliceCounter(self.uc)
        self.rip_reg = cpustate.RegisterBatch(self.uc, ("rip",))
        self.flags_reg = cpustate.RegisterBatch(self.uc, ("rflags",))
        self.registers = cpustate.RegisterReader(self.uc)
        self.interrupts = InterruptDelivery(self.uc, self.ram)
        self.syscalls = SyscallTransfer(self.uc)
        self._syscall_pending = False  # a SYSCALL ran: its transfer is done at the slice's end

        self.icount = 0
        self.in_slice = False
        self.slice_base = 0
        self.halted = False
        self.exit_status: Optional[int] = None
        self.stop_before: Optional[str] = None  # set by a hook that stops before an instruction
        self.stop_after: Optional[str] = None  # set by a hook that stops after the current one
        self._fault: Optional[str] = None
        self._hook_error: Optional[Exception] = None  # raised in a raw hook, for _slice to raise
        self._if_watch: Optional[int] = None  # the block hook, while an interrupt waits for IF
        self._last_block: Optional[tuple[int, int]] = None  # (address, size) it saw last
        # Called between slices once this icount's events are done: the state there is "the
        # state at icount N" that snapshots capture and debugger stops show.
        self.boundary_hooks: list[Callable[[], None]] = []
        # Called right before an interrupt is delivered (its frame written to RAM), with the
        # vector: the debugger keeps the frame's old bytes to step back over it.
        self.interrupt_hooks: list[Callable[[int], None]] = []
        # Replay: called with (address, bytes) right before the recording's debugger write to
        # memory is made again (the player's `pos` is still its record), so whole-history
        # queries and watchpoints see it among the writes; a hook may stop the run before or
        # after it (cpu.following.Follower._debugger_write).
        self.debugger_write_hooks: list[Callable[[int, bytes], None]] = []
        self.stop_requested = False  # set by `request_stop` (a signal handler may call it)
        self.output = OutputDigest()  # what the guest printed since the last state digest
        self._left_at = 0  # the icount `run` last returned at: any other at the next is a jump
        self._host_t0 = time.monotonic_ns()
        self._tsc_last = 0

        self.timers = TimerQueue(self.now)
        self.timers.kick = self._end_slice_at
        ctx = BoardContext(now=self.now, shift=shift, timers=self.timers, rr=seam,
                           kick=self._end_slice_now)
        self.board = Board()
        self.pic = self.board.add(Pic8259Pair(ctx))
        ctx.set_irq = self.pic.set_irq
        self.pit = self.board.add(Pit8254(ctx))
        self.serial_out, self.debugcon_out = serial_out, debugcon_out  # the host's sinks
        self.uart = self.board.add(Uart16550(ctx, self.output.counted(lambda data: self.serial_out(data))))
        self.rtc = self.board.add(Rtc146818(ctx))
        self.disk = disk
        self.ata = self.board.add(AtaDisk(ctx, disk))
        self.board.add(DebugExit(ctx, self._guest_exit))
        self.board.add(DebugCon(ctx, self.output.counted(lambda data: self.debugcon_out(data))))
        self.digest_timer = self.timers.new("digest", self._digest, internal=True)
        if seam.mode != "plain":
            self.digest_timer.arm(DIGEST_INTERVAL)
        self.follower = Follower(self)  # replay: the log's records, taken where they were made
        self._install_hooks()
        self._boot()

    # -- time ---------------------------------------------------------------------------------

    def now(self) -> int:
        """The exact icount, also from inside a hook in the middle of a slice."""
        if self.in_slice:
            return self.slice_base + self.counter.counter.value - 1
        return self.icount

    def vtime_ns(self, icount: Optional[int] = None) -> int:
        return (self.icount if icount is None else icount) << self.shift

    def _end_slice_at(self, deadline: int) -> None:
        if self.in_slice:
            self.counter.end_after_current(max(0, deadline - self.now() - 1))

    def _end_slice_now(self) -> None:
        if self.in_slice:
            self.counter.end_after_current(0)

    # -- boot ---------------------------------------------------------------------------------

    def _boot(self) -> None:
        """The boot contract (cpu/boot.py): kernel, modules and boot data in RAM, then the CPU
        in long mode (ELF64) or 32-bit protected mode (Multiboot, PVH) at the entry point."""
        plan = boot.plan(self.kernel, self.ram.size, self.cmdline)
        for addr, data in plan.writes:
            self.ram.write(addr, data)
        gdtr = (0, boot.GDT_BASE, len(boot.GDT) * 8 - 1, 0)
        if plan.long_mode:
            cpumode.enter(self.uc, boot.LONG_MODE_CR0, boot.PML4_BASE, boot.LONG_MODE_CR4,
                          boot.LONG_MODE_EFER, gdtr, boot.CODE64, boot.DATA, boot.DATA, boot.DATA)
        else:
            cpumode.enter(self.uc, boot.PROTECTED_CR0, 0, 0, 0, gdtr, boot.CODE32, boot.DATA32,
                          boot.DATA32, boot.DATA32)
        uc = self.uc
        uc.reg_write(X.UC_X86_REG_FPCW, boot.FPCW)
        uc.reg_write(X.UC_X86_REG_FPTAG, boot.FPTAG)
        uc.reg_write(X.UC_X86_REG_MXCSR, boot.MXCSR)
        uc.reg_write(X.UC_X86_REG_RFLAGS, 0x2)
        for name in cpustate.GPRS[:16]:  # what the format does not pass is zero
            uc.reg_write(cpustate.reg_id(name), plan.registers.get(name, 0))
        uc.reg_write(X.UC_X86_REG_RIP, plan.registers["rip"])

    # -- hooks --------------------------------------------------------------------------------

    def _install_hooks(self) -> None:
        uc = self.uc
        uc.hook_add(UC_HOOK_INSN, self._in, None, 1, 0, X.UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_INSN, self._out, None, 1, 0, X.UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INTR, self._intr)
        uc.hook_add(UC_HOOK_INSN, self._syscall, None, 1, 0, X.UC_X86_INS_SYSCALL)
        uc.hook_add(UC_HOOK_MEM_INVALID, self._bad_memory)
        # The binding refuses RDTSC hooks; the core takes them with the CPUID callback type.
        tsc = uccallback(uc, HOOK_INSN_CPUID_CFUNC)(self._rdtsc)
        for insn in (X.UC_X86_INS_RDTSC, X.UC_X86_INS_RDTSCP):
            uc._Uc__do_hook_add(UC_HOOK_INSN, tsc, 1, 0, ctypes.c_int(insn))

    def _in(self, uc: Uc, port: int, size: int, _ud: object) -> int:
        """A port read. Raised errors (a replay divergence at a logged PIT or RTC read) are kept
        for `_slice` to raise, as in `_rdtsc`: the binding cannot convert a hook's None."""
        try:
            return self.board.io_read(port, size) & ((1 << (8 * size)) - 1)
        except Exception as e:
            self._hook_error = e
            uc.emu_stop()
            return 0

    def _out(self, uc: Uc, port: int, size: int, value: int, _ud: object) -> None:
        self.board.io_write(port, size, value & ((1 << (8 * size)) - 1))

    def _host_tsc(self) -> int:
        """A monotonic host-derived TSC (1 GHz): only ever reached through the seam."""
        value = max(time.monotonic_ns() - self._host_t0, self._tsc_last + 1)
        self._tsc_last = value
        return value

    def continue_tsc(self, floor: int) -> None:
        """The host TSC from now on counts on from `floor` (the last value the guest saw before a
        branch went live), so it never goes back."""
        self._host_t0 = time.monotonic_ns() - floor
        self._tsc_last = floor

    def _rdtsc(self, uc: Uc, _ud: object) -> int:
        """RDTSC/RDTSCP through the time seam. Raised errors (a replay divergence) are kept for
        `_slice` to raise: the binding's guard would return None, which ctypes cannot convert
        to this hook's result and reports on stderr."""
        try:
            value = self.seam.time.read("tsc", self._host_tsc)
        except Exception as e:
            self._hook_error = e
            uc.emu_stop()
            return 1
        uc.reg_write(X.UC_X86_REG_RAX, value & 0xFFFFFFFF)
        uc.reg_write(X.UC_X86_REG_RDX, (value >> 32) & 0xFFFFFFFF)
        if uc.mem_read(self.rip_reg.read()[0], 3) == b"\x0f\x01\xf9":  # rdtscp also gives TSC_AUX
            uc.reg_write(X.UC_X86_REG_RCX, uc.msr_read(0xC0000103) & 0xFFFFFFFF)
        return 1

    def _intr(self, uc: Uc, intno: int, _ud: object) -> None:
        name = EXCEPTIONS.get(intno, f"int {intno:#x}")
        self._fault = f"unhandled exception {name}"
        self.stop_before = "fault"
        self._end_slice_now()

    def _syscall(self, uc: Uc, _ud: object) -> None:
        """Unicorn only calls hooks for SYSCALL: end the slice after it, `_slice` transfers."""
        self._syscall_pending = True
        self._end_slice_now()

    def _bad_memory(self, uc: Uc, access: int, address: int, size: int, value: int, _ud: object) -> bool:
        kind = {19: "read", 20: "write", 21: "fetch"}.get(access, "access")
        self._fault = f"guest {kind} of unmapped memory at {address:#x}"
        return False

    def _guest_exit(self, status: int) -> None:
        self.exit_status = status
        self._end_slice_now()

    # -- a debugger's writes ------------------------------------------------------------------

    def write_memory(self, address: int, data: bytes) -> None:
        """A debugger's write to RAM: an input (logged in a recording; in a replay it takes the
        run off its recording). ValueError, nothing written, outside RAM."""
        self._poke_memory(address, data)
        self._changed_by_debugger()
        self.seam.debugger.memory(address, data)  # once made: a refused write is no input

    def write_register(self, name: str, value: int) -> None:
        """A debugger's write to a register (cpu.cpustate's names; x87 registers take the 80-bit
        value, MSRs by name). ValueError, nothing logged, for a name or value it cannot take."""
        cpustate.write_register(self.uc, name, value)
        self._changed_by_debugger()
        self.seam.debugger.register(name, value)

    def _changed_by_debugger(self) -> None:
        """In a replay, what the guest prints from here on is not the recording's, and a state
        restored later may land here: this interval's output is not checked."""
        if self.seam.core.replaying:
            self.output.whole = False

    def _poke_memory(self, address: int, data: bytes) -> None:
        self.ram.write(address, data)  # ValueError, nothing written, past RAM
        self.uc.ctl_remove_cache(address, address + max(len(data), 1))  # code may have changed

    # -- running ------------------------------------------------------------------------------

    def rip(self) -> int:
        return self.rip_reg.read()[0]

    def if_set(self) -> bool:
        return bool(self.flags_reg.read()[0] & IF)

    def request_stop(self) -> None:
        """Make `run` return ("interrupt") at the next slice boundary, after the timers due there
        and before anything else: where a replay of the log ending there stops too. A Ctrl-C
        raised as an exception could land half-way through logging an event instead."""
        self.stop_requested = True

    def run(self, until: Optional[int] = None) -> Stop:
        """Run until the guest exits, `until` is reached, a breakpoint hook stops it, or (replay)
        the recording ends. In a replay a guest fault the recording did not end with is a
        divergence: the recording went on there."""
        if self.icount != self._left_at:  # restored or rewound since: output seen only in part
            self.output.whole = False
        try:
            return self._run(until)
        except RecordedFault:
            raise
        except GuestError as e:
            if not self.seam.core.replaying:
                raise
            raise self.follower.fault(e) from None
        finally:
            self._left_at = self.icount

    def _run(self, until: Optional[int]) -> Stop:
        replaying = self.seam.core.replaying
        while True:
            if self.exit_status is not None:
                if replaying:
                    cut = self.follower.exit()
                    if cut is not None:
                        return cut
                return Stop("exit", self.icount, self.exit_status)
            self.timers.fire_due(self.icount)
            if self.stop_requested:
                self.stop_requested = False
                return Stop("interrupt", self.icount)
            if replaying:
                end = self.follower.events()
                if end is not None:
                    return end
            else:
                self._take_host_input()
                if self.pic.pending() and self.if_set() and not self._sti_shadow(self.rip()):
                    self._interrupt(self.pic.acknowledge())
            for hook in self.boundary_hooks:
                hook()
            if until is not None and self.icount >= until:
                return Stop("limit", self.icount)
            if self.halted:
                if replaying:
                    raise Divergence(self.icount, "the guest halted where the recording did not")
                self._idle(until)
                continue
            target = self.icount + MAX_SLICE
            deadline = self.timers.next_deadline()
            if deadline is not None and deadline < target:
                target = deadline
            if replaying:
                ev = self.seam.events.next()
                limit = self.seam.core.player.end_icount
                if ev is not None and ev.icount < target:
                    target = ev.icount
                if limit < target:
                    target = limit
            else:
                self._watch_if(self.pic.pending())
            if until is not None and until < target:
                target = until
            stopped = self._slice(target - self.icount)
            if stopped is not None:
                return stopped

    def _watch_if(self, on: bool) -> None:
        """While an interrupt is pending, stop at the first instruction where the guest can take it.

        STI, POPF and IRETQ (what sets IF) each end a translation block, and the instruction in
        STI's shadow is a block of its own, so a block hook sees every point where IF may have
        become set. It is installed only while an interrupt waits: a Python block hook is slow."""
        if on and self._if_watch is None:
            self._if_watch = self.uc.hook_add(UC_HOOK_BLOCK, self._block)
            self.uc.ctl_flush_tb()  # Unicorn 2.1.4 only hooks code translated afterwards
        elif not on and self._if_watch is not None:
            self.uc.hook_del(self._if_watch)
            self._if_watch = None
            self._last_block = None

    def _block(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        if self.if_set() and not self._sti_shadow(address):
            # A block hook runs before the block's first instruction is counted: the slice ends
            # right before it, and the executor delivers the interrupt there.
            self.counter.end_after_current(0)
        else:
            self._last_block = (address, size)

    def _sti_shadow(self, address: int) -> bool:
        """Whether the instruction at `address` follows an STI that just ran: one more
        instruction runs before an interrupt (so `sti; hlt` cannot miss a wake-up). Known only
        from the block hook; without it no interrupt was waiting when the STI ran."""
        if self._last_block is None or sum(self._last_block) != address:
            return False
        start, size = self._last_block
        *_, last = _DISASM.disasm(bytes(self.uc.mem_read(start, size)), start)
        return last.mnemonic == "sti"

    def _slice(self, n: int) -> Optional[Stop]:
        if n <= 0:
            return None
        self.slice_base = self.icount
        self.timers.slice_end = self.icount + n
        self.in_slice = True
        self.stop_before = None
        self.stop_after = None
        self._fault = None
        err: Optional[UcError] = None
        try:
            self.uc.emu_start(self.rip(), END_ADDRESS, 0, n)
        except UcError as e:
            err = e
        finally:
            self.in_slice = False
            self.timers.slice_end = None
        counted, budget = self.counter.counter.value, self.counter.budget.value
        if err is None and self.stop_before is None and counted <= budget and not self._after_hlt():
            # Unicorn 2.1.4 with paging on sometimes ends a slice at an invalid instruction
            # without reporting it (seen with `66 0f c7 f2`, rdrand %dx): only HLT stops early
            # without an error, so this was the #UD.
            err = UcError(UC_ERR_INSN_INVALID)
        if err is not None and err.errno == UC_ERR_FETCH_UNMAPPED:
            self.icount += counted  # the fetch failed before the next instruction was counted
        elif err is not None or self.stop_before is not None or counted > budget:
            self.icount += max(counted - 1, 0)  # the last counted instruction did not run
        else:
            self.icount += counted  # HLT: the only other way a slice ends, and it ran
        if self._hook_error is not None:
            error, self._hook_error = self._hook_error, None
            raise error
        if self._syscall_pending:
            self._syscall_pending = False
            try:
                self.syscalls.enter()
            except SyscallFault as e:
                self.icount -= 1  # the SYSCALL faulted: it did not complete
                self.rip_reg.write([self.rip() - 2])
                raise GuestError(str(e), self.icount, self.rip()) from None
        if err is not None:
            return self._error(err)
        if self.stop_before == "fault":
            raise GuestError(self._fault or "guest fault", self.icount, self.rip())
        if self.stop_before is not None:
            return Stop(self.stop_before, self.icount)
        if self.stop_after is not None:
            return Stop(self.stop_after, self.icount)
        if counted <= budget:
            self.halted = True
        return None

    def _after_hlt(self) -> bool:
        """Whether the instruction before RIP is a HLT (a slice that stopped early did halt)."""
        rip = self.rip()
        try:
            return rip > 0 and bytes(self.uc.mem_read(rip - 1, 1)) == b"\xf4"
        except UcError:  # RIP past RAM (a debugger put it there): no HLT ran
            return False

    def _error(self, err: UcError) -> Optional[Stop]:
        rip = self.rip()
        if err.errno == UC_ERR_INSN_INVALID and self._emulate_random(rip):
            return None
        if err.errno in (UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_UNMAPPED, UC_ERR_FETCH_UNMAPPED):
            raise GuestError(self._fault or f"guest touched unmapped memory ({err})", self.icount, rip)
        if err.errno == UC_ERR_INSN_INVALID:
            raise GuestError("unhandled exception #UD invalid opcode", self.icount, rip)
        raise GuestError(f"CPU error: {err}", self.icount, rip)

    def _emulate_random(self, rip: int) -> bool:
        """RDRAND/RDSEED trap (the CPU model lacks them): supply a logged value, set CF."""
        if not 0 <= rip < self.ram.size:  # RIP past RAM (a debugger put it there)
            return False
        insn = next(_DISASM.disasm(self.ram.read(rip, min(16, self.ram.size - rip)), rip, 1), None)
        if insn is None or insn.mnemonic not in ("rdrand", "rdseed"):
            return False
        op = insn.operands[0]
        name = insn.reg_name(op.reg)
        value = self.seam.entropy.read() & ((1 << (8 * op.size)) - 1)
        if op.size == 4:  # a 32-bit destination zero-extends into the full register
            name = "r" + name[1:] if name.startswith("e") else name[:-1]
        self.uc.reg_write(getattr(X, f"UC_X86_REG_{name.upper()}"), value)
        flags = self.flags_reg.read()[0]
        self.flags_reg.write([(flags | 1) & ~0x8D4])  # CF=1; OF SF ZF AF PF = 0
        self.rip_reg.write([rip + insn.size])
        self.icount += 1
        return True

    def _interrupt(self, vector: int) -> None:
        self.seam.events.irq(vector)
        for hook in self.interrupt_hooks:
            hook(vector)
        try:
            self.interrupts.deliver(vector)
        except InterruptError as e:
            raise GuestError(str(e), self.icount, self.rip()) from None
        self.halted = False

    def _take_host_input(self) -> None:
        data = self.seam.char.poll(self.uart.room())
        if data:
            self.uart.receive(data)

    def _idle(self, until: Optional[int]) -> None:
        """A halted CPU: jump virtual time to the next deadline (or wait for the host clock)."""
        deadline = self.timers.next_deadline(guest_only=True)
        if not self.if_set():  # no input or timer can wake it: with IF=0 nothing is delivered
            raise GuestError("the guest halted with interrupts disabled and nothing pending",
                             self.icount, self.rip())
        if deadline is None and not self.seam.char.live:
            raise GuestError("the guest halted and nothing can wake it (no timer, no input)",
                             self.icount, self.rip())
        if deadline is None and not self.uart.room():  # input it cannot take wakes nothing
            raise GuestError("the guest halted and nothing can wake it (no timer; its serial input "
                             "waits for it to read the UART)", self.icount, self.rip())
        target = self._wait_host(deadline) if self.sleep or deadline is None else deadline
        if until is not None and until < target:
            target = until
        self.seam.events.wake(target)
        self.icount = target

    def _wait_host(self, deadline: Optional[int]) -> int:
        """Sleep until the host clock reaches `deadline`'s virtual time or host input arrives."""
        self.seam.events.before_wait()
        start_ns = time.monotonic_ns()
        while True:
            elapsed = time.monotonic_ns() - start_ns
            reached = self.icount + (elapsed >> self.shift)
            if deadline is not None and reached >= deadline:
                return deadline
            if self.stop_requested:
                return reached
            remaining = None if deadline is None else ((deadline - reached) << self.shift) / 1e9
            wait = min(remaining or 0.5, 0.5)
            if self.seam.char.host is None or not self.uart.room():  # no input can wake it: a timer will
                time.sleep(wait)
                continue
            data = self.seam.char.host.take(timeout=wait)
            if data:
                self.seam.char.host.unget(data)  # the next poll logs it, at the wake icount
                return max(self.icount, self.icount + ((time.monotonic_ns() - start_ns) >> self.shift))
            if deadline is None and not self.seam.char.live:
                raise GuestError("the guest halted and its input ended", self.icount, self.rip())

    def _digest(self, when: int) -> None:
        """Log (record) or check (replay) the state digest, then schedule the next one."""
        self._state_digest()
        self.digest_timer.arm((self.icount // DIGEST_INTERVAL + 1) * DIGEST_INTERVAL)

    def _state_digest(self) -> None:
        self.pages.update()
        regs = self.registers.read()
        other = {k: v for k, v in regs.items() if k not in _DIGEST_GPRS}
        other_hash = _hash_repr(other)
        ram_hash, changed = self.pages.take_digest()
        self.seam.digest.check(regs, other_hash, ram_hash.to_bytes(8, "little"), changed,
                               self.pages.hash64, self.output.take())

    def finish(self, status: Optional[int], reason: str) -> None:
        """Record the machine's end in the log (nothing in other modes). A guest that exited
        ends with its status and EXIT_REASON whoever closes the run: a replay checks both."""
        if self.seam.core.recording:
            if self.exit_status is not None:
                status, reason = self.exit_status, EXIT_REASON
            if not reason.startswith(FAULT_REASON):
                self._state_digest()
            self.seam.events.end(status, reason)


_DIGEST_GPRS = frozenset(("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10",
                          "r11", "r12", "r13", "r14", "r15", "rip", "rflags"))


_DISASM = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
_DISASM.detail = True


def _hash_repr(values: dict) -> bytes:
    return xxhash.xxh3_64_digest(repr(sorted(values.items())).encode())
