"""Timer queue: ordering, kicks for earlier deadlines mid-slice."""
from cpu.timers import TimerQueue


def test_fire_in_deadline_then_creation_order():
    now = [0]
    q = TimerQueue(lambda: now[0])
    fired = []
    a = q.new("a", lambda when: fired.append(("a", when)))
    b = q.new("b", lambda when: fired.append(("b", when)))
    c = q.new("c", lambda when: fired.append(("c", when)))
    b.arm(10)
    a.arm(20)
    c.arm(10)
    assert q.next_deadline() == 10
    q.fire_due(15)
    assert fired == [("b", 10), ("c", 10)]
    q.fire_due(20)
    assert fired[-1] == ("a", 20) and q.next_deadline() is None


def test_rearm_from_callback_and_cancel():
    now = [0]
    q = TimerQueue(lambda: now[0])
    fired = []
    t = q.new("t", lambda when: (fired.append(when), t.arm(when + 5)))
    t.arm(5)
    q.fire_due(17)
    assert fired == [5, 10, 15] and t.deadline == 20
    t.cancel()
    assert q.next_deadline() is None


def test_kick_only_for_deadline_inside_running_slice():
    now = [100]
    q = TimerQueue(lambda: now[0])
    kicks = []
    q.kick = kicks.append
    t = q.new("t", lambda when: None)
    t.arm(150)  # not in a slice
    q.slice_end = 200
    t.arm(300)
    t.arm(180)
    assert kicks == [180]
    t.arm(50)  # never before now
    assert t.deadline == 100
