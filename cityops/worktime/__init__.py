"""Working-time clock (工作时间 / 计时): calendar, working hours, time limits, deadlines."""
