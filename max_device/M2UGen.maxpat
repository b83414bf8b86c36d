{
	"patcher": {
		"fileversion": 1,
		"appversion": {
			"major": 8,
			"minor": 6,
			"revision": 0,
			"architecture": "x64",
			"modernui": 1
		},
		"classnamespace": "box",
		"rect": [
			100.0,
			100.0,
			1480.0,
			700.0
		],
		"openinpresentation": 1,
		"default_fontsize": 10.0,
		"default_fontface": 0,
		"default_fontname": "Arial Bold",
		"gridonopen": 1,
		"gridsize": [
			8.0,
			8.0
		],
		"gridsnaponopen": 1,
		"objectsnaponopen": 1,
		"statusbarvisible": 2,
		"toolbarvisible": 1,
		"boxanimatetime": 200,
		"enablehscroll": 1,
		"enablevscroll": 1,
		"devicewidth": 1104.0,
		"description": "M2UGen: ask about, edit or generate music with a local M2UGen server (OSC bridge).",
		"digest": "M2UGen music assistant",
		"tags": "",
		"style": "",
		"subpatcher_template": "",
		"assistshowspatchername": 0,
		"boxes": [
			{
				"box": {
					"id": "obj-1",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 2,
					"outlettype": [
						"signal",
						"signal"
					],
					"patching_rect": [
						20,
						20,
						60,
						22
					],
					"text": "plugin~"
				}
			},
			{
				"box": {
					"id": "obj-2",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 2,
					"outlettype": [
						"signal",
						"signal"
					],
					"patching_rect": [
						20,
						300,
						60,
						22
					],
					"text": "plugout~"
				}
			},
			{
				"box": {
					"id": "obj-3",
					"maxclass": "newobj",
					"numinlets": 4,
					"numoutlets": 1,
					"outlettype": [
						"signal"
					],
					"patching_rect": [
						120,
						260,
						150,
						22
					],
					"text": "record~ ---m2u_capture 2"
				}
			},
			{
				"box": {
					"id": "obj-4",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"float",
						"bang"
					],
					"patching_rect": [
						290,
						260,
						190,
						22
					],
					"text": "buffer~ ---m2u_capture 60000 2"
				}
			},
			{
				"box": {
					"id": "obj-20",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 4,
					"outlettype": [
						"",
						"",
						"",
						""
					],
					"patching_rect": [
						420,
						420,
						240,
						22
					],
					"text": "js m2ugen_device.js"
				}
			},
			{
				"box": {
					"id": "obj-10",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						420,
						520,
						150,
						22
					],
					"text": "udpsend 127.0.0.1 9100"
				}
			},
			{
				"box": {
					"id": "obj-11",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						600,
						380,
						100,
						22
					],
					"text": "udpreceive 0 @defer 1"
				}
			},
			{
				"box": {
					"id": "obj-70",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"bang",
						"int",
						"int"
					],
					"patching_rect": [
						420,
						300,
						100,
						22
					],
					"text": "live.thisdevice"
				}
			},
			{
				"box": {
					"id": "obj-71",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						420,
						340,
						35,
						22
					],
					"text": "init"
				}
			},
			{
				"box": {
					"id": "obj-21",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 8,
					"outlettype": [
						"",
						"",
						"",
						"",
						"",
						"",
						"",
						""
					],
					"patching_rect": [
						580,
						470,
						190,
						22
					],
					"text": "route status progress answer analysis media jobs_menu learn_status"
				}
			},
			{
				"box": {
					"id": "obj-22",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						580,
						510,
						75,
						22
					],
					"text": "prepend set"
				}
			},
			{
				"box": {
					"fontsize": 10.0,
					"id": "obj-23",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						580,
						560,
						300,
						20
					],
					"presentation": 1,
					"presentation_rect": [
						8,
						148,
						784,
						18
					],
					"text": "M2UGen: waiting for Live"
				}
			},
			{
				"box": {
					"id": "obj-25",
					"maxclass": "multislider",
					"numinlets": 1,
					"numoutlets": 2,
					"orientation": 0,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						700,
						510,
						120,
						12
					],
					"presentation": 1,
					"presentation_rect": [
						8,
						138,
						784,
						8
					],
					"setminmax": [
						0.0,
						1.0
					],
					"setstyle": 1,
					"size": 1
				}
			},
			{
				"box": {
					"id": "obj-26",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						840,
						510,
						75,
						22
					],
					"text": "prepend set"
				}
			},
			{
				"box": {
					"fontsize": 10.0,
					"id": "obj-27",
					"lines": 0,
					"maxclass": "textedit",
					"numinlets": 1,
					"numoutlets": 4,
					"outlettype": [
						"",
						"int",
						"",
						""
					],
					"patching_rect": [
						840,
						560,
						220,
						80
					],
					"presentation": 1,
					"presentation_rect": [
						548,
						8,
						244,
						66
					],
					"readonly": 1,
					"text": "",
					"wordwrap": 1
				}
			},
			{
				"box": {
					"id": "obj-30",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 5,
					"outlettype": [
						"",
						"",
						"",
						"",
						""
					],
					"patching_rect": [
						120,
						200,
						120,
						22
					],
					"text": "route record buffer preview dsp"
				}
			},
			{
				"box": {
					"fontsize": 9.5,
					"id": "obj-80",
					"maxclass": "live.comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						20,
						60,
						40,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						8,
						6,
						40,
						18
					],
					"text": "Mode",
					"textjustification": 0
				}
			},
			{
				"box": {
					"id": "obj-40",
					"maxclass": "live.tab",
					"num_lines_patching": 1,
					"num_lines_presentation": 1,
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"",
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						20,
						80,
						180,
						20
					],
					"presentation": 1,
					"presentation_rect": [
						48,
						6,
						150,
						18
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"ask",
								"edit",
								"generate"
							],
							"parameter_initial": [
								2
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Mode",
							"parameter_mmax": 2,
							"parameter_shortname": "Mode",
							"parameter_type": 2,
							"parameter_unitstyle": 9
						}
					},
					"varname": "Mode"
				}
			},
			{
				"box": {
					"id": "obj-41",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						20,
						110,
						85,
						22
					],
					"text": "prepend mode"
				}
			},
			{
				"box": {
					"fontsize": 9.5,
					"id": "obj-81",
					"maxclass": "live.comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						220,
						60,
						40,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						8,
						28,
						40,
						18
					],
					"text": "Prompt",
					"textjustification": 0
				}
			},
			{
				"box": {
					"bangmode": 0,
					"fontsize": 10.0,
					"id": "obj-42",
					"lines": 0,
					"maxclass": "textedit",
					"numinlets": 1,
					"numoutlets": 4,
					"outlettype": [
						"",
						"int",
						"",
						""
					],
					"patching_rect": [
						220,
						80,
						180,
						40
					],
					"presentation": 1,
					"presentation_rect": [
						48,
						28,
						246,
						40
					],
					"text": "",
					"wordwrap": 1
				}
			},
			{
				"box": {
					"id": "obj-43",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"patching_rect": [
						220,
						130,
						65,
						22
					],
					"text": "route text"
				}
			},
			{
				"box": {
					"id": "obj-44",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"",
						"",
						""
					],
					"parameter_enable": 1,
					"patching_rect": [
						220,
						160,
						110,
						22
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_invisible": 1,
							"parameter_longname": "Prompt",
							"parameter_shortname": "Prompt",
							"parameter_type": 3
						}
					},
					"saved_object_attributes": {
						"parameter_enable": 1,
						"parameter_mappable": 0
					},
					"text": "pattr m2u_prompt",
					"varname": "Prompt"
				}
			},
			{
				"box": {
					"id": "obj-45",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						220,
						190,
						95,
						22
					],
					"text": "prepend prompt"
				}
			},
			{
				"box": {
					"id": "obj-46",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						340,
						190,
						75,
						22
					],
					"text": "prepend set"
				}
			},
			{
				"box": {
					"fontsize": 9.5,
					"id": "obj-82",
					"maxclass": "live.comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						740,
						60,
						100,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						8,
						74,
						100,
						18
					],
					"text": "Duration s (0 auto)",
					"textjustification": 0
				}
			},
			{
				"box": {
					"id": "obj-47",
					"maxclass": "live.numbox",
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						740,
						80,
						50,
						15
					],
					"presentation": 1,
					"presentation_rect": [
						110,
						74,
						44,
						15
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_initial": [
								0.0
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Duration",
							"parameter_mmax": 300.0,
							"parameter_mmin": 0.0,
							"parameter_shortname": "Duration",
							"parameter_type": 0,
							"parameter_unitstyle": 1
						}
					},
					"varname": "Duration"
				}
			},
			{
				"box": {
					"id": "obj-48",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						740,
						110,
						105,
						22
					],
					"text": "prepend duration"
				}
			},
			{
				"box": {
					"fontsize": 9.5,
					"id": "obj-83",
					"maxclass": "live.comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						880,
						60,
						70,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						160,
						74,
						64,
						18
					],
					"text": "Conditioning",
					"textjustification": 0
				}
			},
			{
				"box": {
					"id": "obj-49",
					"maxclass": "live.menu",
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"",
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						880,
						80,
						90,
						15
					],
					"presentation": 1,
					"presentation_rect": [
						224,
						74,
						70,
						15
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"text",
								"embedding"
							],
							"parameter_initial": [
								0
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Conditioning",
							"parameter_mmax": 1,
							"parameter_shortname": "Cond",
							"parameter_type": 2,
							"parameter_unitstyle": 9
						}
					},
					"varname": "Conditioning"
				}
			},
			{
				"box": {
					"id": "obj-50",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						880,
						110,
						125,
						22
					],
					"text": "prepend conditioning"
				}
			},
			{
				"box": {
					"fontsize": 9.5,
					"id": "obj-84",
					"maxclass": "live.comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						1020,
						60,
						40,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						8,
						96,
						30,
						18
					],
					"text": "Host",
					"textjustification": 0
				}
			},
			{
				"box": {
					"bangmode": 0,
					"fontsize": 10.0,
					"id": "obj-51",
					"lines": 1,
					"maxclass": "textedit",
					"numinlets": 1,
					"numoutlets": 4,
					"outlettype": [
						"",
						"int",
						"",
						""
					],
					"patching_rect": [
						1020,
						80,
						110,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						40,
						96,
						90,
						16
					],
					"text": "127.0.0.1"
				}
			},
			{
				"box": {
					"id": "obj-52",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"patching_rect": [
						1020,
						110,
						65,
						22
					],
					"text": "route text"
				}
			},
			{
				"box": {
					"id": "obj-53",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"",
						"",
						""
					],
					"parameter_enable": 1,
					"patching_rect": [
						1020,
						140,
						95,
						22
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_invisible": 1,
							"parameter_longname": "Host",
							"parameter_shortname": "Host",
							"parameter_type": 3
						}
					},
					"saved_object_attributes": {
						"parameter_enable": 1,
						"parameter_mappable": 0
					},
					"text": "pattr m2u_host",
					"varname": "Host"
				}
			},
			{
				"box": {
					"id": "obj-54",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1020,
						170,
						85,
						22
					],
					"text": "prepend host"
				}
			},
			{
				"box": {
					"id": "obj-59",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1120,
						170,
						75,
						22
					],
					"text": "prepend set"
				}
			},
			{
				"box": {
					"fontsize": 9.5,
					"id": "obj-85",
					"maxclass": "live.comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						1220,
						60,
						40,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						136,
						96,
						30,
						18
					],
					"text": "Port",
					"textjustification": 0
				}
			},
			{
				"box": {
					"id": "obj-55",
					"maxclass": "live.numbox",
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						1220,
						80,
						50,
						15
					],
					"presentation": 1,
					"presentation_rect": [
						166,
						97,
						44,
						15
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_initial": [
								9100
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Bridge Port",
							"parameter_mmax": 65535,
							"parameter_mmin": 1,
							"parameter_shortname": "Port",
							"parameter_type": 1,
							"parameter_unitstyle": 0
						}
					},
					"varname": "Bridge Port"
				}
			},
			{
				"box": {
					"id": "obj-56",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1220,
						110,
						85,
						22
					],
					"text": "prepend port"
				}
			},
			{
				"box": {
					"fontsize": 9.5,
					"id": "obj-86",
					"maxclass": "live.comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						1320,
						60,
						40,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						214,
						96,
						32,
						18
					],
					"text": "Reply",
					"textjustification": 0
				}
			},
			{
				"box": {
					"id": "obj-57",
					"maxclass": "live.numbox",
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						1320,
						80,
						50,
						15
					],
					"presentation": 1,
					"presentation_rect": [
						248,
						97,
						46,
						15
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_initial": [
								0
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Reply Port",
							"parameter_mmax": 65535,
							"parameter_mmin": 0.0,
							"parameter_shortname": "Reply",
							"parameter_type": 1,
							"parameter_unitstyle": 0
						}
					},
					"varname": "Reply Port"
				}
			},
			{
				"box": {
					"id": "obj-58",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1320,
						110,
						115,
						22
					],
					"text": "prepend reply_port"
				}
			},
			{
				"box": {
					"id": "obj-60",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						20,
						380,
						44,
						20
					],
					"presentation": 1,
					"presentation_rect": [
						8,
						118,
						60,
						16
					],
					"text": "Go"
				}
			},
			{
				"box": {
					"id": "obj-61",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"bang",
						"bang"
					],
					"patching_rect": [
						20,
						410,
						40,
						22
					],
					"text": "t b b"
				}
			},
			{
				"box": {
					"id": "obj-62",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						20,
						440,
						30,
						22
					],
					"text": "go"
				}
			},
			{
				"box": {
					"id": "obj-63",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						100,
						380,
						44,
						20
					],
					"presentation": 1,
					"presentation_rect": [
						74,
						118,
						60,
						16
					],
					"text": "Cancel"
				}
			},
			{
				"box": {
					"id": "obj-64",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						100,
						410,
						45,
						22
					],
					"text": "cancel"
				}
			},
			{
				"box": {
					"id": "obj-65",
					"maxclass": "live.text",
					"mode": 1,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						180,
						380,
						44,
						20
					],
					"presentation": 1,
					"presentation_rect": [
						140,
						118,
						60,
						16
					],
					"text": "Rec",
					"texton": "Rec"
				}
			},
			{
				"box": {
					"id": "obj-66",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						180,
						410,
						75,
						22
					],
					"text": "prepend rec"
				}
			},
			{
				"box": {
					"id": "obj-100",
					"maxclass": "live.comment",
					"text": "Seed",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						1100,
						20,
						40,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						300,
						6,
						30,
						18
					]
				}
			},
			{
				"box": {
					"id": "obj-101",
					"maxclass": "live.numbox",
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						1100,
						40,
						60,
						15
					],
					"presentation": 1,
					"presentation_rect": [
						330,
						7,
						72,
						15
					],
					"varname": "Seed",
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_initial": [
								-1
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Seed",
							"parameter_mmax": 2147483647.0,
							"parameter_mmin": -1.0,
							"parameter_shortname": "Seed",
							"parameter_type": 1,
							"parameter_unitstyle": 0
						}
					}
				}
			},
			{
				"box": {
					"id": "obj-102",
					"maxclass": "newobj",
					"text": "prepend seed",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1100,
						60,
						80,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-103",
					"maxclass": "live.comment",
					"text": "Takes",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						1200,
						20,
						40,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						406,
						6,
						32,
						18
					]
				}
			},
			{
				"box": {
					"id": "obj-104",
					"maxclass": "live.numbox",
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						1200,
						40,
						40,
						15
					],
					"presentation": 1,
					"presentation_rect": [
						440,
						7,
						36,
						15
					],
					"varname": "Takes",
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_initial": [
								1
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Takes",
							"parameter_mmax": 8.0,
							"parameter_mmin": 1.0,
							"parameter_shortname": "Takes",
							"parameter_type": 1,
							"parameter_unitstyle": 0
						}
					}
				}
			},
			{
				"box": {
					"id": "obj-105",
					"maxclass": "newobj",
					"text": "prepend takes",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1200,
						60,
						80,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-106",
					"maxclass": "live.text",
					"mode": 1,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 1,
					"patching_rect": [
						1300,
						40,
						50,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						482,
						6,
						58,
						16
					],
					"text": "Preview",
					"texton": "Preview",
					"varname": "Preview",
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"off",
								"on"
							],
							"parameter_initial": [
								1
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Preview",
							"parameter_mmax": 1,
							"parameter_shortname": "Preview",
							"parameter_type": 2
						}
					}
				}
			},
			{
				"box": {
					"id": "obj-107",
					"maxclass": "newobj",
					"text": "prepend preview",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1300,
						60,
						90,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-108",
					"maxclass": "live.comment",
					"text": "Gen mode",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						1100,
						100,
						50,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						300,
						28,
						50,
						18
					]
				}
			},
			{
				"box": {
					"id": "obj-109",
					"maxclass": "live.menu",
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"",
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						1100,
						120,
						90,
						15
					],
					"presentation": 1,
					"presentation_rect": [
						352,
						29,
						90,
						15
					],
					"varname": "Generation Mode",
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"text",
								"continue",
								"melody"
							],
							"parameter_initial": [
								0
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Generation Mode",
							"parameter_mmax": 2,
							"parameter_shortname": "Gen",
							"parameter_type": 2,
							"parameter_unitstyle": 9
						}
					}
				}
			},
			{
				"box": {
					"id": "obj-110",
					"maxclass": "newobj",
					"text": "prepend gen_mode",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1100,
						140,
						100,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-111",
					"maxclass": "live.drop",
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						1100,
						180,
						160,
						40
					],
					"presentation": 1,
					"presentation_rect": [
						300,
						48,
						240,
						40
					]
				}
			},
			{
				"box": {
					"id": "obj-112",
					"maxclass": "newobj",
					"text": "prepend media",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1100,
						230,
						90,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-113",
					"maxclass": "comment",
					"text": "drop an image or video",
					"fontsize": 10.0,
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						1100,
						260,
						200,
						20
					],
					"presentation": 1,
					"presentation_rect": [
						300,
						90,
						196,
						18
					]
				}
			},
			{
				"box": {
					"id": "obj-114",
					"maxclass": "newobj",
					"text": "prepend set",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1100,
						290,
						70,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-115",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						1300,
						180,
						24,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						500,
						90,
						40,
						16
					],
					"text": "x"
				}
			},
			{
				"box": {
					"id": "obj-116",
					"maxclass": "message",
					"text": "media_clear",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1300,
						210,
						80,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-117",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						1100,
						330,
						44,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						300,
						112,
						56,
						16
					],
					"text": "Play"
				}
			},
			{
				"box": {
					"id": "obj-118",
					"maxclass": "message",
					"text": "play",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1100,
						360,
						40,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-119",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						1160,
						330,
						44,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						360,
						112,
						56,
						16
					],
					"text": "Accept"
				}
			},
			{
				"box": {
					"id": "obj-120",
					"maxclass": "message",
					"text": "accept",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1160,
						360,
						50,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-121",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						1220,
						330,
						44,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						420,
						112,
						60,
						16
					],
					"text": "Regen"
				}
			},
			{
				"box": {
					"id": "obj-122",
					"maxclass": "message",
					"text": "regenerate",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1220,
						360,
						70,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-123",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						1300,
						330,
						44,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						484,
						112,
						56,
						16
					],
					"text": "Discard"
				}
			},
			{
				"box": {
					"id": "obj-124",
					"maxclass": "message",
					"text": "discard",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1300,
						360,
						55,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-125",
					"maxclass": "comment",
					"text": "",
					"fontsize": 10.0,
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						840,
						660,
						300,
						20
					],
					"presentation": 1,
					"presentation_rect": [
						548,
						98,
						244,
						18
					]
				}
			},
			{
				"box": {
					"id": "obj-126",
					"maxclass": "newobj",
					"text": "prepend set",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						840,
						630,
						70,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-127",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						1100,
						400,
						44,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						548,
						118,
						44,
						16
					],
					"text": "Jobs"
				}
			},
			{
				"box": {
					"id": "obj-128",
					"maxclass": "message",
					"text": "refresh_jobs",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1100,
						430,
						80,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-129",
					"maxclass": "umenu",
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"int",
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						1200,
						400,
						140,
						22
					],
					"presentation": 1,
					"presentation_rect": [
						596,
						118,
						136,
						16
					],
					"items": []
				}
			},
			{
				"box": {
					"id": "obj-130",
					"maxclass": "newobj",
					"text": "prepend pick_job",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1200,
						430,
						100,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-131",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						1350,
						400,
						56,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						736,
						118,
						56,
						16
					],
					"text": "Re-insert"
				}
			},
			{
				"box": {
					"id": "obj-132",
					"maxclass": "message",
					"text": "reinsert",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1350,
						430,
						60,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-133",
					"maxclass": "newobj",
					"text": "sfplay~ 2",
					"numinlets": 2,
					"numoutlets": 3,
					"outlettype": [
						"",
						"",
						""
					],
					"patching_rect": [
						120,
						240,
						80,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-134",
					"maxclass": "newobj",
					"text": "+~",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						20,
						260,
						40,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-135",
					"maxclass": "newobj",
					"text": "+~",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						70,
						260,
						40,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-136",
					"maxclass": "newobj",
					"text": "dspstate~",
					"numinlets": 1,
					"numoutlets": 4,
					"outlettype": [
						"",
						"",
						"",
						""
					],
					"patching_rect": [
						260,
						240,
						70,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-137",
					"maxclass": "newobj",
					"text": "prepend sample_rate",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						260,
						270,
						110,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-140",
					"maxclass": "live.comment",
					"text": "Bars",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						1500,
						20,
						40,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						548,
						77,
						28,
						18
					]
				}
			},
			{
				"box": {
					"id": "obj-141",
					"maxclass": "live.numbox",
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						1500,
						40,
						40,
						15
					],
					"presentation": 1,
					"presentation_rect": [
						576,
						78,
						34,
						15
					],
					"varname": "Bars",
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_initial": [
								0
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Bars",
							"parameter_mmax": 512.0,
							"parameter_mmin": 0.0,
							"parameter_shortname": "Bars",
							"parameter_type": 1,
							"parameter_unitstyle": 0
						}
					}
				}
			},
			{
				"box": {
					"id": "obj-142",
					"maxclass": "newobj",
					"text": "prepend bars",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1500,
						60,
						100,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-143",
					"maxclass": "live.text",
					"mode": 1,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 1,
					"patching_rect": [
						1600,
						40,
						50,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						614,
						78,
						40,
						16
					],
					"text": "Loop",
					"texton": "Loop",
					"varname": "Loop",
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"off",
								"on"
							],
							"parameter_initial": [
								0
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Loop",
							"parameter_mmax": 1,
							"parameter_shortname": "Loop",
							"parameter_type": 2
						}
					}
				}
			},
			{
				"box": {
					"id": "obj-144",
					"maxclass": "newobj",
					"text": "prepend loop",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1600,
						60,
						100,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-145",
					"maxclass": "live.text",
					"mode": 1,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 1,
					"patching_rect": [
						1600,
						100,
						50,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						656,
						78,
						52,
						16
					],
					"text": "Fit tempo",
					"texton": "Fit tempo",
					"varname": "Fit tempo",
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"off",
								"on"
							],
							"parameter_initial": [
								0
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Fit tempo",
							"parameter_mmax": 1,
							"parameter_shortname": "Fit tempo",
							"parameter_type": 2
						}
					}
				}
			},
			{
				"box": {
					"id": "obj-146",
					"maxclass": "newobj",
					"text": "prepend fit_tempo",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1600,
						120,
						100,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-230",
					"maxclass": "live.text",
					"mode": 1,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 1,
					"patching_rect": [
						1600,
						160,
						50,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						944,
						118,
						72,
						16
					],
					"text": "Dereverb",
					"texton": "Dereverb",
					"varname": "Dereverb",
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"off",
								"on"
							],
							"parameter_initial": [
								1
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Transcribe Dereverb",
							"parameter_mmax": 1,
							"parameter_shortname": "Dereverb",
							"parameter_type": 2
						}
					}
				}
			},
			{
				"box": {
					"id": "obj-231",
					"maxclass": "newobj",
					"text": "prepend dereverb",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1600,
						180,
						100,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-147",
					"maxclass": "live.menu",
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"",
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						1700,
						40,
						90,
						15
					],
					"presentation": 1,
					"presentation_rect": [
						712,
						79,
						80,
						15
					],
					"varname": "Vocoder",
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"encodec",
								"mbd"
							],
							"parameter_initial": [
								0
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Vocoder",
							"parameter_mmax": 1,
							"parameter_shortname": "Vocoder",
							"parameter_type": 2,
							"parameter_unitstyle": 9
						}
					}
				}
			},
			{
				"box": {
					"id": "obj-148",
					"maxclass": "newobj",
					"text": "prepend vocoder",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1700,
						60,
						100,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-149",
					"maxclass": "live.text",
					"mode": 1,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 1,
					"patching_rect": [
						1800,
						40,
						60,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						446,
						29,
						94,
						15
					],
					"text": "Clip melody",
					"texton": "Clip melody",
					"varname": "Clip Melody",
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"off",
								"on"
							],
							"parameter_initial": [
								0
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Clip Melody",
							"parameter_mmax": 1,
							"parameter_shortname": "Melody",
							"parameter_type": 2
						}
					}
				}
			},
			{
				"box": {
					"id": "obj-150",
					"maxclass": "newobj",
					"text": "prepend melody_clip",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1800,
						60,
						100,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-151",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						1900,
						40,
						60,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						206,
						118,
						88,
						16
					],
					"text": "Transcribe"
				}
			},
			{
				"box": {
					"id": "obj-152",
					"maxclass": "message",
					"text": "transcribe",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1900,
						60,
						70,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-156",
					"maxclass": "live.drop",
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						1400,
						180,
						120,
						30
					],
					"presentation": 1,
					"presentation_rect": [
						800,
						30,
						134,
						36
					]
				}
			},
			{
				"box": {
					"id": "obj-157",
					"maxclass": "newobj",
					"text": "prepend learn_file",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1400,
						220,
						110,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-158",
					"maxclass": "textedit",
					"bangmode": 0,
					"fontsize": 10.0,
					"lines": 1,
					"numinlets": 1,
					"numoutlets": 4,
					"outlettype": [
						"",
						"int",
						"",
						""
					],
					"patching_rect": [
						1530,
						180,
						100,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						800,
						72,
						64,
						16
					],
					"text": "mine"
				}
			},
			{
				"box": {
					"id": "obj-159",
					"maxclass": "newobj",
					"text": "route text",
					"numinlets": 2,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"patching_rect": [
						1530,
						210,
						65,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-160",
					"maxclass": "newobj",
					"text": "prepend learn_name",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1530,
						240,
						115,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-161",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						1660,
						180,
						44,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						868,
						72,
						40,
						16
					],
					"text": "Learn"
				}
			},
			{
				"box": {
					"id": "obj-162",
					"maxclass": "message",
					"text": "learn",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1660,
						210,
						45,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-163",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						1720,
						180,
						24,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						912,
						72,
						22,
						16
					],
					"text": "clr"
				}
			},
			{
				"box": {
					"id": "obj-164",
					"maxclass": "message",
					"text": "learn_clear",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1720,
						210,
						75,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-165",
					"maxclass": "textedit",
					"bangmode": 0,
					"fontsize": 10.0,
					"lines": 1,
					"numinlets": 1,
					"numoutlets": 4,
					"outlettype": [
						"",
						"int",
						"",
						""
					],
					"patching_rect": [
						1400,
						300,
						100,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						844,
						8,
						90,
						16
					],
					"text": ""
				}
			},
			{
				"box": {
					"id": "obj-166",
					"maxclass": "newobj",
					"text": "route text",
					"numinlets": 2,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"patching_rect": [
						1400,
						330,
						65,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-167",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"",
						"",
						""
					],
					"parameter_enable": 1,
					"patching_rect": [
						1400,
						360,
						110,
						22
					],
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_invisible": 1,
							"parameter_longname": "Adapter",
							"parameter_shortname": "Adapter",
							"parameter_type": 3
						}
					},
					"saved_object_attributes": {
						"parameter_enable": 1,
						"parameter_mappable": 0
					},
					"text": "pattr m2u_adapter",
					"varname": "Adapter"
				}
			},
			{
				"box": {
					"id": "obj-168",
					"maxclass": "newobj",
					"text": "prepend adapter",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1400,
						390,
						100,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-169",
					"maxclass": "newobj",
					"text": "prepend set",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1520,
						390,
						75,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-170",
					"maxclass": "live.comment",
					"text": "Adapter",
					"fontsize": 10.0,
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						1400,
						280,
						50,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						800,
						8,
						42,
						16
					]
				}
			},
			{
				"box": {
					"id": "obj-200",
					"maxclass": "comment",
					"text": "Learn: idle",
					"fontsize": 10.0,
					"linecount": 2,
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						1720,
						260,
						200,
						30
					],
					"presentation": 1,
					"presentation_rect": [
						800,
						92,
						134,
						36
					]
				}
			},
			{
				"box": {
					"id": "obj-201",
					"maxclass": "newobj",
					"text": "prepend set",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1720,
						230,
						80,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-202",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						1820,
						180,
						40,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						868,
						130,
						66,
						16
					],
					"text": "Stop learn"
				}
			},
			{
				"box": {
					"id": "obj-203",
					"maxclass": "message",
					"text": "learn_cancel",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						1820,
						204,
						80,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-204",
					"maxclass": "live.comment",
					"text": "Stems",
					"fontsize": 10.0,
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						2100,
						20,
						60,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						944,
						8,
						40,
						16
					]
				}
			},
			{
				"box": {
					"id": "obj-205",
					"maxclass": "live.text",
					"mode": 0,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 0,
					"patching_rect": [
						2100,
						40,
						60,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						988,
						8,
						56,
						16
					],
					"text": "Stems"
				}
			},
			{
				"box": {
					"id": "obj-206",
					"maxclass": "message",
					"text": "stems",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						2100,
						60,
						50,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-207",
					"maxclass": "live.text",
					"mode": 1,
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"parameter_enable": 1,
					"patching_rect": [
						2220,
						40,
						50,
						16
					],
					"presentation": 1,
					"presentation_rect": [
						1048,
						8,
						50,
						16
					],
					"text": "6 stems",
					"texton": "6 stems",
					"varname": "Six Stems",
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"off",
								"on"
							],
							"parameter_initial": [
								0
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Six Stems",
							"parameter_mmax": 1,
							"parameter_shortname": "6 stems",
							"parameter_type": 2
						}
					}
				}
			},
			{
				"box": {
					"id": "obj-208",
					"maxclass": "newobj",
					"text": "prepend stems6",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						2100,
						90,
						100,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-209",
					"maxclass": "live.comment",
					"text": "Edit op",
					"fontsize": 10.0,
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						2100,
						130,
						60,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						944,
						30,
						44,
						16
					]
				}
			},
			{
				"box": {
					"id": "obj-210",
					"maxclass": "live.menu",
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"",
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						2100,
						150,
						90,
						15
					],
					"presentation": 1,
					"presentation_rect": [
						988,
						31,
						110,
						15
					],
					"varname": "Stem Op",
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"auto",
								"remove",
								"keep",
								"replace",
								"add"
							],
							"parameter_initial": [
								0
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Stem Op",
							"parameter_mmax": 4,
							"parameter_shortname": "Op",
							"parameter_type": 2,
							"parameter_unitstyle": 9
						}
					}
				}
			},
			{
				"box": {
					"id": "obj-211",
					"maxclass": "newobj",
					"text": "prepend stem_op",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						2100,
						170,
						100,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-212",
					"maxclass": "live.comment",
					"text": "Stem",
					"fontsize": 10.0,
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						2100,
						200,
						60,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						944,
						50,
						44,
						16
					]
				}
			},
			{
				"box": {
					"id": "obj-213",
					"maxclass": "live.menu",
					"numinlets": 1,
					"numoutlets": 3,
					"outlettype": [
						"",
						"",
						"float"
					],
					"parameter_enable": 1,
					"patching_rect": [
						2100,
						220,
						90,
						15
					],
					"presentation": 1,
					"presentation_rect": [
						988,
						51,
						110,
						15
					],
					"varname": "Stem",
					"saved_attribute_attributes": {
						"valueof": {
							"parameter_enum": [
								"drums",
								"bass",
								"other",
								"vocals",
								"guitar",
								"piano"
							],
							"parameter_initial": [
								0
							],
							"parameter_initial_enable": 1,
							"parameter_invisible": 1,
							"parameter_longname": "Stem",
							"parameter_mmax": 5,
							"parameter_shortname": "Stem",
							"parameter_type": 2,
							"parameter_unitstyle": 9
						}
					}
				}
			},
			{
				"box": {
					"id": "obj-214",
					"maxclass": "newobj",
					"text": "prepend stem",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						2100,
						240,
						100,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-215",
					"maxclass": "live.comment",
					"text": "With",
					"fontsize": 10.0,
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [
						2100,
						270,
						60,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						944,
						72,
						44,
						16
					]
				}
			},
			{
				"box": {
					"id": "obj-216",
					"maxclass": "textedit",
					"bangmode": 0,
					"fontsize": 10.0,
					"lines": 1,
					"numinlets": 1,
					"numoutlets": 4,
					"outlettype": [
						"",
						"int",
						"",
						""
					],
					"patching_rect": [
						2100,
						290,
						100,
						18
					],
					"presentation": 1,
					"presentation_rect": [
						988,
						72,
						110,
						16
					],
					"text": ""
				}
			},
			{
				"box": {
					"id": "obj-217",
					"maxclass": "newobj",
					"text": "route text",
					"numinlets": 2,
					"numoutlets": 2,
					"outlettype": [
						"",
						""
					],
					"patching_rect": [
						2100,
						320,
						65,
						22
					]
				}
			},
			{
				"box": {
					"id": "obj-218",
					"maxclass": "newobj",
					"text": "prepend stem_with",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [
						""
					],
					"patching_rect": [
						2100,
						350,
						100,
						22
					]
				}
			}
		],
		"lines": [
			{
				"patchline": {
					"destination": [
						"obj-3",
						0
					],
					"source": [
						"obj-1",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-3",
						1
					],
					"source": [
						"obj-1",
						1
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-10",
						0
					],
					"source": [
						"obj-20",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-11",
						0
					],
					"source": [
						"obj-20",
						1
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-11",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-71",
						0
					],
					"source": [
						"obj-70",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-71",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-21",
						0
					],
					"source": [
						"obj-20",
						2
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-22",
						0
					],
					"source": [
						"obj-21",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-23",
						0
					],
					"source": [
						"obj-22",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-25",
						0
					],
					"source": [
						"obj-21",
						1
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-26",
						0
					],
					"source": [
						"obj-21",
						2
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-27",
						0
					],
					"source": [
						"obj-26",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-30",
						0
					],
					"source": [
						"obj-20",
						3
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-3",
						0
					],
					"source": [
						"obj-30",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-4",
						0
					],
					"source": [
						"obj-30",
						1
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-41",
						0
					],
					"source": [
						"obj-40",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-41",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-43",
						0
					],
					"source": [
						"obj-42",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-44",
						0
					],
					"source": [
						"obj-43",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-44",
						0
					],
					"source": [
						"obj-43",
						1
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-45",
						0
					],
					"source": [
						"obj-44",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-46",
						0
					],
					"source": [
						"obj-44",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-45",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-42",
						0
					],
					"source": [
						"obj-46",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-48",
						0
					],
					"source": [
						"obj-47",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-48",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-50",
						0
					],
					"source": [
						"obj-49",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-50",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-52",
						0
					],
					"source": [
						"obj-51",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-53",
						0
					],
					"source": [
						"obj-52",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-53",
						0
					],
					"source": [
						"obj-52",
						1
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-54",
						0
					],
					"source": [
						"obj-53",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-59",
						0
					],
					"source": [
						"obj-53",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-54",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-51",
						0
					],
					"source": [
						"obj-59",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-56",
						0
					],
					"source": [
						"obj-55",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-56",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-58",
						0
					],
					"source": [
						"obj-57",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-58",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-61",
						0
					],
					"source": [
						"obj-60",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-42",
						0
					],
					"source": [
						"obj-61",
						1
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-62",
						0
					],
					"source": [
						"obj-61",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-62",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-64",
						0
					],
					"source": [
						"obj-63",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-64",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-66",
						0
					],
					"source": [
						"obj-65",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-66",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-102",
						0
					],
					"source": [
						"obj-101",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-102",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-105",
						0
					],
					"source": [
						"obj-104",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-105",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-107",
						0
					],
					"source": [
						"obj-106",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-107",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-110",
						0
					],
					"source": [
						"obj-109",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-110",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-112",
						0
					],
					"source": [
						"obj-111",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-112",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-114",
						0
					],
					"source": [
						"obj-21",
						4
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-113",
						0
					],
					"source": [
						"obj-114",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-116",
						0
					],
					"source": [
						"obj-115",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-116",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-118",
						0
					],
					"source": [
						"obj-117",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-118",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-120",
						0
					],
					"source": [
						"obj-119",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-120",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-122",
						0
					],
					"source": [
						"obj-121",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-122",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-124",
						0
					],
					"source": [
						"obj-123",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-124",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-126",
						0
					],
					"source": [
						"obj-21",
						3
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-125",
						0
					],
					"source": [
						"obj-126",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-128",
						0
					],
					"source": [
						"obj-127",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-128",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-129",
						0
					],
					"source": [
						"obj-21",
						5
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-130",
						0
					],
					"source": [
						"obj-129",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-130",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-132",
						0
					],
					"source": [
						"obj-131",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-132",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-133",
						0
					],
					"source": [
						"obj-30",
						2
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-136",
						0
					],
					"source": [
						"obj-30",
						3
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-137",
						0
					],
					"source": [
						"obj-136",
						1
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-137",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-134",
						0
					],
					"source": [
						"obj-1",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-134",
						1
					],
					"source": [
						"obj-133",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-2",
						0
					],
					"source": [
						"obj-134",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-135",
						0
					],
					"source": [
						"obj-1",
						1
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-135",
						1
					],
					"source": [
						"obj-133",
						1
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-2",
						1
					],
					"source": [
						"obj-135",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-142",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-142",
						0
					],
					"source": [
						"obj-141",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-144",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-144",
						0
					],
					"source": [
						"obj-143",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-146",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-146",
						0
					],
					"source": [
						"obj-145",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-148",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-148",
						0
					],
					"source": [
						"obj-147",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-150",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-150",
						0
					],
					"source": [
						"obj-149",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-152",
						0
					],
					"source": [
						"obj-151",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-152",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-157",
						0
					],
					"source": [
						"obj-156",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-159",
						0
					],
					"source": [
						"obj-158",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-160",
						0
					],
					"source": [
						"obj-159",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-162",
						0
					],
					"source": [
						"obj-161",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-164",
						0
					],
					"source": [
						"obj-163",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-157",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-160",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-162",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-164",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-166",
						0
					],
					"source": [
						"obj-165",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-167",
						0
					],
					"source": [
						"obj-166",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-167",
						0
					],
					"source": [
						"obj-166",
						1
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-168",
						0
					],
					"source": [
						"obj-167",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-169",
						0
					],
					"source": [
						"obj-167",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-168",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-165",
						0
					],
					"source": [
						"obj-169",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-201",
						0
					],
					"source": [
						"obj-21",
						6
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-200",
						0
					],
					"source": [
						"obj-201",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-203",
						0
					],
					"source": [
						"obj-202",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-203",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-206",
						0
					],
					"source": [
						"obj-205",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-206",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-208",
						0
					],
					"source": [
						"obj-207",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-208",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-211",
						0
					],
					"source": [
						"obj-210",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-211",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-214",
						0
					],
					"source": [
						"obj-213",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-214",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-217",
						0
					],
					"source": [
						"obj-216",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-218",
						0
					],
					"source": [
						"obj-217",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-218",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-231",
						0
					],
					"source": [
						"obj-230",
						0
					]
				}
			},
			{
				"patchline": {
					"destination": [
						"obj-20",
						0
					],
					"source": [
						"obj-231",
						0
					]
				}
			}
		],
		"parameters": {
			"obj-40": [
				"Mode",
				"Mode",
				0
			],
			"obj-44": [
				"Prompt",
				"Prompt",
				0
			],
			"obj-47": [
				"Duration",
				"Duration",
				0
			],
			"obj-49": [
				"Conditioning",
				"Cond",
				0
			],
			"obj-53": [
				"Host",
				"Host",
				0
			],
			"obj-55": [
				"Bridge Port",
				"Port",
				0
			],
			"obj-57": [
				"Reply Port",
				"Reply",
				0
			],
			"parameterbanks": {
				"0": {
					"index": 0,
					"name": "",
					"parameters": [
						"-",
						"-",
						"-",
						"-",
						"-",
						"-",
						"-",
						"-"
					]
				}
			},
			"inherited_shortname": 1,
			"obj-101": [
				"Seed",
				"Seed",
				0
			],
			"obj-104": [
				"Takes",
				"Takes",
				0
			],
			"obj-106": [
				"Preview",
				"Preview",
				0
			],
			"obj-109": [
				"Generation Mode",
				"Gen",
				0
			],
			"obj-141": [
				"Bars",
				"Bars",
				0
			],
			"obj-143": [
				"Loop",
				"Loop",
				0
			],
			"obj-145": [
				"Fit tempo",
				"Fit tempo",
				0
			],
			"obj-147": [
				"Vocoder",
				"Vocoder",
				0
			],
			"obj-149": [
				"Clip Melody",
				"Melody",
				0
			],
			"obj-167": [
				"Adapter",
				"Adapter",
				0
			],
			"obj-207": [
				"Six Stems",
				"6 stems",
				0
			],
			"obj-210": [
				"Stem Op",
				"Op",
				0
			],
			"obj-213": [
				"Stem",
				"Stem",
				0
			],
			"obj-230": [
				"Transcribe Dereverb",
				"Dereverb",
				0
			]
		},
		"dependency_cache": [
			{
				"name": "m2ugen_device.js",
				"bootpath": ".",
				"patcherrelativepath": ".",
				"type": "TEXT",
				"implicit": 1
			}
		],
		"latency": 0,
		"is_mpe": 0,
		"external_mpe_tuning_enabled": 0,
		"minimum_live_version": "",
		"minimum_max_version": "",
		"platform_compatibility": 0,
		"autosave": 0
	}
}
