// WorkerHold: one MPM worker held by SMTP for a step that may block
// (bulkhead.hpp, ESMTPMaxWorkers). No httpd header here: the gated handler
// (gated_handler.cpp) needs only this, and the unit tests link it with a
// stand-in.
#pragma once

namespace esmtp
{

// One MPM worker held by SMTP for a step that may block. Move-only; the
// destructor gives the worker back.
class WorkerHold
{
  public:
    // A hold if the cap allows one; an empty hold (false) otherwise, counted
    // as a refusal. The caller then refuses the step instead of waiting.
    static WorkerHold try_take();
    // A hold whatever the cap, for steps that cannot be refused (ending a
    // transaction or the session: abort, RSET, QUIT, DISCONNECT).
    static WorkerHold take();

    WorkerHold() = default;
    WorkerHold(WorkerHold &&o) noexcept : state_(o.state_) { o.state_ = State::none; }
    WorkerHold &operator=(WorkerHold &&o) noexcept;
    WorkerHold(const WorkerHold &) = delete;
    WorkerHold &operator=(const WorkerHold &) = delete;
    ~WorkerHold() { release(); }

    explicit operator bool() const { return state_ != State::none; }
    void release() noexcept;

  private:
    // uncounted: the bulkhead is off, every step may go on
    enum class State { none, counted, uncounted };
    explicit WorkerHold(State s) : state_(s) {}
    State state_ = State::none;
};

} // namespace esmtp
