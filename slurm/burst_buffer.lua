--[[
SFS as a per-job burst buffer through Slurm's burst_buffer/lua plugin
(Slurm >= 21.08; docs/slurm.md says how to install it and what a job
writes).

A job asks for SFS with directives in its script:

    #BB_LUA SFS chunk_store=64GiB servers_per_node=1
    #BB_LUA SFS_STAGE_IN  /lustre/proj/inputs  /inputs
    #BB_LUA SFS_STAGE_OUT /results             /lustre/proj/run42/results

and finds it through SFS_CONFIG, SFS_HOSTFILE and SFS_MOUNTDIR in its
environment (`sfs exec -- prog`, or `mpirun -np N sfs exec -- prog`).

What Slurm calls, and what this script does then (every `sfs` command runs
as the job's user, never as root, with the user's own permissions):

  job_process  at submission: the directives are checked; a bad one rejects
               the job with a message naming it.
  setup        job pending: the job's directory JOBS/<job id> is made, owned
               by the user.
  data_in      job pending, no nodes yet: the stage-in sources are checked
               (they must exist and be readable by the user). The copy
               itself waits for pre_run: this job's SFS lives on the job's
               own nodes, which are known only then.
  paths        the variables above are added to the job's environment.
  pre_run      nodes allocated, before the script runs: the hostfile of the
               job's nodes (`sfs hostfile`), the config, `sfs start` (the
               site's launcher reaches the nodes), then each stage-in.
  post_run,    after the script: each stage-out, verified; a failure keeps
  data_out     the job in stage-out with the reason.
  teardown     `sfs stop` and `sfs clean` on every node; the job's directory
               is removed (its log JOBS/<job id>.log stays).

Site settings: the table `site` below, or a file `sfs_bb_site.lua` next to
this script that returns a table of overrides.
]]

local site = {
	-- The sfs binary, on every node and on the slurmctld host.
	sfs = "/usr/local/bin/sfs",
	-- A directory that slurmctld and every node see at the same path (the
	-- launcher's assumption): per-job hostfile, config and job secret.
	jobs_dir = "/shared/sfs/jobs",
	-- Each server's state (chunks, metadata) on its node: node-local NVMe
	-- or memory; the job id is appended.
	rootdir = "/tmp/sfs-bb",
	-- The path under which programs see SFS (`sfs exec`).
	mountdir = "/sfs",
	-- How `sfs start` reaches the job's nodes from the slurmctld host:
	-- "ssh" (the user's ssh to the nodes) or "local" (every node is this
	-- machine).
	launcher = "ssh",
	ssh_command = { "ssh" },
	-- `sfs hostfile --address`: the address a node's servers listen on.
	address = "{node}",
	port = 7700,
	-- Extra config.json fields, as JSON text without the braces (for
	-- example '"transport": "auto", "chunk_size": 1048576').
	extra_config = "",
	-- PATH of the commands run for the job.
	path = "/usr/local/bin:/usr/bin:/bin",
}

local lua_script_name = "burst_buffer.lua"

-- Overrides from sfs_bb_site.lua next to this script.
do
	local source = debug.getinfo(1, "S").source
	local dir = source:match("^@(.*)/[^/]*$")
	if dir then
		local chunk = loadfile(dir .. "/sfs_bb_site.lua")
		if chunk then
			for key, value in pairs(chunk()) do
				site[key] = value
			end
		end
	end
end

-- `text` as one word of a POSIX shell command line.
local function quote(text)
	return "'" .. tostring(text):gsub("'", "'\\''") .. "'"
end

-- `text` as a JSON string.
local function json_string(text)
	local escaped = tostring(text):gsub('[%c"\\]', function(c)
		if c == '"' then
			return '\\"'
		elseif c == "\\" then
			return "\\\\"
		end
		return string.format("\\u%04x", string.byte(c))
	end)
	return '"' .. escaped .. '"'
end

local SIZE_UNITS = { [""] = 1, K = 2 ^ 10, M = 2 ^ 20, G = 2 ^ 30, T = 2 ^ 40, P = 2 ^ 50 }

-- Bytes of "64GiB", "500G", "1048576"; nil when it is not a size.
local function parse_size(text)
	local number, unit = text:match("^(%d+%.?%d*)%s*([KMGTPkmgtp]?)i?[Bb]?$")
	if not number then
		return nil
	end
	return math.floor(tonumber(number) * SIZE_UNITS[unit:upper()])
end

-- The SFS directives of a job script: { options = {...}, stage_in = {...},
-- stage_out = {...} }, or nil and the reason.
local function parse_directives(job_script)
	local file, err = io.open(job_script, "r")
	if not file then
		return nil, "cannot read the job script: " .. tostring(err)
	end
	local wanted = { options = {}, stage_in = {}, stage_out = {}, any = false }
	local number = 0
	for line in file:lines() do
		number = number + 1
		local rest = line:match("^#BB_LUA%s+(.*)$")
		if rest then
			local words = {}
			for word in rest:gmatch("%S+") do
				table.insert(words, word)
			end
			local kind = words[1]
			local where = "job script line " .. number .. " (" .. line .. ")"
			if kind == "SFS" then
				wanted.any = true
				for i = 2, #words do
					local key, value = words[i]:match("^([%w_]+)=(.+)$")
					if key == "chunk_store" then
						if not parse_size(value) then
							file:close()
							return nil, where .. ": chunk_store must be a size such as 64GiB"
						end
					elseif key == "servers_per_node" or key == "port" then
						if not value:match("^%d+$") or tonumber(value) < 1 then
							file:close()
							return nil, where .. ": " .. key .. " must be a positive number"
						end
					elseif key ~= "backend_dir" then
						file:close()
						return nil,
							where
								.. ": unknown SFS option "
								.. words[i]
								.. " (chunk_store=, servers_per_node=, port=, backend_dir=)"
					end
					wanted.options[key] = value
				end
			elseif kind == "SFS_STAGE_IN" or kind == "SFS_STAGE_OUT" then
				wanted.any = true
				if #words ~= 3 then
					file:close()
					return nil, where .. ": expected " .. kind .. " SOURCE DESTINATION"
				end
				local list = kind == "SFS_STAGE_IN" and wanted.stage_in or wanted.stage_out
				table.insert(list, { words[2], words[3] })
			end
		end
	end
	file:close()
	return wanted
end

-- The job's directory and files.
local function job_dir(job_id)
	return site.jobs_dir .. "/" .. job_id
end

local function log_path(job_id)
	return site.jobs_dir .. "/" .. job_id .. ".log"
end

local function append_log(job_id, text)
	local log = io.open(log_path(job_id), "a")
	if log then
		log:write(os.date("%Y-%m-%d %H:%M:%S "), text, "\n")
		log:close()
	end
end

-- Runs a shell command, its output appended to the job's log; true when it
-- succeeded, else false and the end of its output. (Lua 5.1, which Slurm
-- links, gives no exit status from a pipe: the shell prints it last.)
local function run(job_id, command)
	append_log(job_id, "$ " .. command)
	local pipe = io.popen("(" .. command .. ") 2>&1; echo \"sfs-bb-status $?\"")
	local output = pipe:read("*a")
	pipe:close()
	local status = output:match("sfs%-bb%-status (%d+)%s*$")
	output = output:gsub("sfs%-bb%-status %d+%s*$", "")
	append_log(job_id, output)
	if status == "0" then
		return true, output
	end
	local lines = {}
	for l in output:gmatch("[^\n]+") do
		table.insert(lines, l)
	end
	local shown = table.concat(lines, "; ", math.max(1, #lines - 2))
	return false, "exit status " .. tostring(status) .. ": " .. shown
end

-- The owner (uid, gid) recorded at setup.
local function owner(job_id)
	local file = io.open(job_dir(job_id) .. "/owner", "r")
	if not file then
		return nil
	end
	local uid, gid = file:read("*a"):match("(%d+)%s+(%d+)")
	file:close()
	return uid, gid
end

-- A shell command (`words`, already quoted) as the job's user, in a clean
-- environment with the job's config and hostfile: nothing of it runs as
-- root.
local function as_user(job_id, words, extra_env)
	local uid, gid = owner(job_id)
	if not uid then
		return false, "no owner recorded for job " .. job_id .. " (setup did not run)"
	end
	local dir = job_dir(job_id)
	local command = "setpriv --reuid="
		.. uid
		.. " --regid="
		.. gid
		.. " --init-groups env -i PATH="
		.. quote(site.path)
		.. " HOME="
		.. quote(dir)
		.. " SFS_CONFIG="
		.. quote(dir .. "/config.json")
		.. " SFS_HOSTFILE="
		.. quote(dir .. "/hostfile")
		.. " "
		.. (os.getenv("SLURM_CONF") and ("SLURM_CONF=" .. quote(os.getenv("SLURM_CONF")) .. " ") or "")
		.. (extra_env or "")
		.. words
	return run(job_id, command)
end

-- `sfs ARGS` as the job's user (`as_user`).
local function sfs_as_user(job_id, args, extra_env)
	return as_user(job_id, quote(site.sfs) .. " " .. args, extra_env)
end

-- The job's config.json, for `nodes` nodes.
local function config_text(job_id, wanted, nodes)
	local fields = {
		'"rootdir": ' .. json_string(site.rootdir .. "/" .. job_id),
		'"mountdir": ' .. json_string(site.mountdir),
	}
	local servers = tonumber(wanted.options.servers_per_node or "1") * nodes
	if wanted.options.chunk_store then
		local per_server = math.ceil(parse_size(wanted.options.chunk_store) / servers)
		table.insert(fields, '"chunk_store_capacity": ' .. string.format("%d", per_server))
	end
	if wanted.options.backend_dir then
		table.insert(
			fields,
			'"backend": {"kind": "dir", "path": '
				.. json_string(wanted.options.backend_dir)
				.. ', "writeback": "idle"}'
		)
	end
	local ssh = {}
	for _, word in ipairs(site.ssh_command) do
		table.insert(ssh, json_string(word))
	end
	table.insert(
		fields,
		'"launcher": {"kind": '
			.. json_string(site.launcher)
			.. ', "ssh_command": ['
			.. table.concat(ssh, ", ")
			.. '], "sfs_path": '
			.. json_string(site.sfs)
			.. "}"
	)
	if site.extra_config ~= "" then
		table.insert(fields, site.extra_config)
	end
	return "{\n  " .. table.concat(fields, ",\n  ") .. "\n}\n"
end

-- Writes `text` to `path` owned by uid:gid with `mode`.
local function write_owned(job_id, path, text, uid, gid, mode)
	local file, err = io.open(path, "w")
	if not file then
		return false, "cannot write " .. path .. ": " .. tostring(err)
	end
	file:write(text)
	file:close()
	return run(job_id, "chown " .. uid .. ":" .. gid .. " " .. quote(path) .. " && chmod " .. mode .. " " .. quote(path))
end

-- The job's node list, from slurmctld.
local function node_list(job_id)
	local pipe = io.popen("scontrol show job " .. quote(job_id) .. " 2>/dev/null")
	local text = pipe:read("*a")
	pipe:close()
	for list in text:gmatch("%sNodeList=(%S+)") do
		if list ~= "(null)" then
			return list
		end
	end
	return nil
end

local function nodes_in(list)
	local pipe = io.popen("scontrol show hostnames " .. quote(list) .. " 2>/dev/null")
	local count = 0
	for _ in pipe:read("*a"):gmatch("%S+") do
		count = count + 1
	end
	pipe:close()
	return count
end

function slurm_bb_job_process(job_script)
	local wanted, err = parse_directives(job_script)
	if not wanted then
		return slurm.ERROR, "SFS burst buffer: " .. err
	end
	return slurm.SUCCESS
end

function slurm_bb_pools()
	return slurm.SUCCESS
end

function slurm_bb_setup(job_id, uid, gid, pool, bb_size, job_script)
	local dir = job_dir(job_id)
	local ok, err = run(job_id, "mkdir -p " .. quote(dir) .. " && chown " .. uid .. ":" .. gid .. " " .. quote(dir) .. " && chmod 0700 " .. quote(dir))
	if not ok then
		return slurm.ERROR, "SFS burst buffer: cannot make " .. dir .. ": " .. err
	end
	local file = io.open(dir .. "/owner", "w")
	file:write(uid .. " " .. gid .. "\n")
	file:close()
	append_log(job_id, "setup: job " .. job_id .. " of uid " .. uid)
	return slurm.SUCCESS
end

function slurm_bb_data_in(job_id, job_script)
	local wanted = parse_directives(job_script)
	for _, pair in ipairs(wanted and wanted.stage_in or {}) do
		if not pair[1]:match("^s3://") then
			local ok = as_user(job_id, "test -r " .. quote(pair[1]))
			if not ok then
				return slurm.ERROR, "SFS burst buffer: stage-in source " .. pair[1] .. " is not readable by the job's user"
			end
		end
	end
	return slurm.SUCCESS
end

function slurm_bb_real_size(job_id)
	return slurm.SUCCESS
end

function slurm_bb_paths(job_id, job_script, path_file)
	local dir = job_dir(job_id)
	local file = io.open(path_file, "w")
	file:write("SFS_CONFIG=" .. dir .. "/config.json\n")
	file:write("SFS_HOSTFILE=" .. dir .. "/hostfile\n")
	file:write("SFS_MOUNTDIR=" .. site.mountdir .. "\n")
	file:close()
	return slurm.SUCCESS
end

function slurm_bb_pre_run(job_id, job_script)
	local wanted, err = parse_directives(job_script)
	if not wanted then
		return slurm.ERROR, "SFS burst buffer: " .. err
	end
	local list = node_list(job_id)
	if not list then
		return slurm.ERROR, "SFS burst buffer: no node list for job " .. job_id
	end
	local uid, gid = owner(job_id)
	local dir = job_dir(job_id)
	local ok
	ok, err = write_owned(job_id, dir .. "/config.json", config_text(job_id, wanted, nodes_in(list)), uid, gid, "0600")
	if not ok then
		return slurm.ERROR, "SFS burst buffer: " .. err
	end
	local hostfile_args = "hostfile --slurm --address "
		.. quote(site.address)
		.. " --port "
		.. (wanted.options.port or site.port)
		.. " --servers-per-node "
		.. (wanted.options.servers_per_node or "1")
		.. " --output "
		.. quote(dir .. "/hostfile")
	ok, err = sfs_as_user(job_id, hostfile_args, "SLURM_JOB_NODELIST=" .. quote(list) .. " ")
	if not ok then
		return slurm.ERROR, "SFS burst buffer: sfs hostfile failed: " .. err
	end
	ok, err = sfs_as_user(job_id, "start")
	if not ok then
		return slurm.ERROR, "SFS burst buffer: sfs start failed: " .. err
	end
	for _, pair in ipairs(wanted.stage_in) do
		ok, err = sfs_as_user(job_id, "stage-in " .. quote(pair[1]) .. " " .. quote(pair[2]))
		if not ok then
			return slurm.ERROR, "SFS burst buffer: stage-in " .. pair[1] .. " failed: " .. err
		end
	end
	return slurm.SUCCESS
end

function slurm_bb_post_run(job_id, job_script)
	return slurm.SUCCESS
end

function slurm_bb_data_out(job_id, job_script)
	local wanted, err = parse_directives(job_script)
	if not wanted then
		return slurm.ERROR, "SFS burst buffer: " .. err
	end
	for _, pair in ipairs(wanted.stage_out) do
		local ok
		ok, err = sfs_as_user(job_id, "stage-out " .. quote(pair[1]) .. " " .. quote(pair[2]))
		if not ok then
			return slurm.ERROR, "SFS burst buffer: stage-out " .. pair[1] .. " failed: " .. err
		end
	end
	return slurm.SUCCESS
end

function slurm_bb_job_teardown(job_id, job_script, hurry)
	local dir = job_dir(job_id)
	local f = io.open(dir .. "/hostfile", "r")
	if f then
		f:close()
		-- `sfs stop` fails when nothing was running (a job cancelled
		-- before pre_run); the clean-up goes on regardless.
		sfs_as_user(job_id, "stop")
		local ok, err = sfs_as_user(job_id, "clean")
		if not ok then
			return slurm.ERROR, "SFS burst buffer: sfs clean failed: " .. err
		end
	end
	run(job_id, "rm -rf " .. quote(dir))
	append_log(job_id, "teardown: done")
	return slurm.SUCCESS
end

function slurm_bb_get_status(...)
	return slurm.SUCCESS, "SFS burst buffer: per-job servers; see " .. site.jobs_dir .. "\n"
end
