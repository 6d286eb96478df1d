"""Closed-loop case management (数字城管 闭环): intake → 受理 → 核实 → 立案 → 派遣 → 处置 → 核查 → 结案."""
